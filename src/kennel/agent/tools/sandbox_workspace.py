"""What Kennel does to a workspace around a sandbox run: hand it over, measure it, roll it back.

Kennel may run as root while the sandbox runs as an unprivileged user: before a run every entry
of the workspace is given to that user (files Kennel wrote since, uploads and `write_file`, are
root's and often 0600), after it again (which also clears set-user-ID bits the code set). The
code may have planted symbolic links anywhere, and another run may be using the same workspace
at the same time, so every step goes through directory descriptors opened without following
links: no link, however placed or swapped in, leads Kennel out of the workspace.

The walk is the watcher's own (`sandbox_init.workspace_usage`), so Kennel measures by the very
rules the watcher enforced during the run. A run that left the workspace over its limit is
rolled back: the entries it created are removed and, if that is not enough, files it grew are
cut back to their size before the run.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from kennel.agent.tools.sandbox_init import (
    FOLDER_FLAGS,
    MAX_DEPTH,
    MB,
    OWNER_ALL,
    open_folder,
    set_mode,
    workspace_usage,
)

Owner = tuple[int, int]
OWNER_READ_WRITE = 0o600
SET_ID = stat.S_ISUID | stat.S_ISGID
SYSTEM_PATH = "/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class Entry:
    inode: int
    kind: int
    size: int


@dataclass(frozen=True, slots=True)
class Survey:
    """The workspace at one moment: bytes used, too deep or not, every entry by its path."""

    used: int
    too_deep: bool
    entries: dict[str, Entry] = field(default_factory=dict)

    def is_over(self, limit: int) -> bool:
        return self.too_deep or self.used > limit


def survey(root: Path, owner: Owner | None) -> Survey:
    """Measure the workspace; with an owner (Kennel is root), give every entry to it."""
    entries: dict[str, Entry] = {}

    def visit(folder: int, name: str, path: str, info: os.stat_result) -> None:
        if owner is not None:
            _hand_over(folder, name, info, owner)
        else:
            _repair(folder, name, info)
        entries[path] = Entry(info.st_ino, stat.S_IFMT(info.st_mode), info.st_size)

    if owner is not None:
        os.chown(root, *owner, follow_symlinks=False)
    used, too_deep = workspace_usage(str(root), visit)
    return Survey(used, too_deep, entries)


def roll_back(root: Path, before: Survey, after: Survey, limit: int, owner: Owner | None) -> str:
    """Undo what a run over the limit left: its new entries, then if need be what it grew.

    Returns what was wrong and what was done, for the run's stderr.
    """
    if after.too_deep:
        wrong = f"the workspace nests folders more than {MAX_DEPTH} deep"
    else:
        wrong = f"the workspace went over its limit of {limit // MB} MB"
    new = {path for path, entry in after.entries.items() if _is_new(path, entry, before)}
    grown = {
        path
        for path, entry in after.entries.items()
        if path not in new and entry.kind == stat.S_IFREG and entry.size > before.entries[path].size
    }
    for path in sorted(new):
        if _parent(path) not in new:
            _remove(root, path)
    if not survey(root, owner).is_over(limit):
        return f"{wrong}: the files it created were removed"
    for path in sorted(grown):
        _cut(root, path, before.entries[path])
    return (
        f"{wrong}: the files it created were removed, those it grew cut back to their size before"
    )


def _is_new(path: str, entry: Entry, before: Survey) -> bool:
    earlier = before.entries.get(path)
    return earlier is None or (earlier.inode, earlier.kind) != (entry.inode, entry.kind)


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _hand_over(parent: int, name: str, info: os.stat_result, owner: Owner) -> None:
    """Give the entry (never what a link points to) to the sandbox user.

    chown also clears the set-user-ID bit (and set-group-ID of group-executable files) the
    code may have set: an entry already the user's is chowned again when it has one.
    """
    setid = stat.S_ISREG(info.st_mode) and info.st_mode & SET_ID
    if (info.st_uid, info.st_gid) != owner or setid:
        os.chown(name, *owner, dir_fd=parent, follow_symlinks=False)


def _repair(parent: int, name: str, info: os.stat_result) -> None:
    """Kennel and the sandbox are the same user: give that user its rights back, no more.

    The code may have taken them away from its files and folders, to hide what a folder holds
    or keep Kennel from reading a file; and a set-user-ID file of Kennel's user would let
    anyone on the host act as Kennel. chmod goes through a descriptor opened without following
    links (O_PATH), by its /proc name.
    """
    if stat.S_ISDIR(info.st_mode):
        wanted = stat.S_IMODE(info.st_mode) | OWNER_ALL
    elif stat.S_ISREG(info.st_mode):
        wanted = (stat.S_IMODE(info.st_mode) | OWNER_READ_WRITE) & ~SET_ID
    else:
        return
    if wanted == stat.S_IMODE(info.st_mode):
        return
    set_mode(parent, name, stat.S_IFMT(info.st_mode), wanted)


def _open_parent(root: Path, path: str) -> int | None:
    descriptor = os.open(root, FOLDER_FLAGS)
    folders = _parent(path).split("/") if "/" in path else []
    for name in folders:
        child = open_folder(descriptor, name)
        os.close(descriptor)
        if child is None:
            return None
        descriptor = child
    return descriptor


def _remove(root: Path, path: str) -> None:
    parent = _open_parent(root, path)
    if parent is None:
        return
    name = path.rpartition("/")[2]
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=parent)
            return
        # rm removes a tree of any depth without following links; the parent is reached
        # through our descriptor, so no component of the path is looked up again.
        rm = shutil.which("rm", path=SYSTEM_PATH) or "rm"
        subprocess.run(  # noqa: S603 - a fixed argv, no shell
            [rm, "-rf", "--one-file-system", "--", f"/proc/self/fd/{parent}/{name}"],
            pass_fds=(parent,),
            env={},
            check=False,
            capture_output=True,
        )
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


def _cut(root: Path, path: str, earlier: Entry) -> None:
    parent = _open_parent(root, path)
    if parent is None:
        return
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        handle = os.open(path.rpartition("/")[2], flags, dir_fd=parent)
    except OSError:
        return
    finally:
        os.close(parent)
    try:
        info = os.fstat(handle)
        if info.st_ino == earlier.inode and stat.S_ISREG(info.st_mode):
            os.ftruncate(handle, earlier.size)
    finally:
        os.close(handle)
