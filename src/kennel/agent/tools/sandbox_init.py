"""The first process inside the Python sandbox: limits, then the code, then a watch on the rest.

`sandbox.py` runs it under bwrap as PID 1 of the sandbox (`--as-pid-1`):
`python -I -S sandbox_init.py CPU MEMORY FILE PROCESSES TOTAL_MEMORY WORKSPACE` (limits in
seconds, bytes and a count), with the code on stdin. It needs only the standard library: the
sandbox's interpreter has nothing of Kennel installed. It forks; the child takes the rlimits
and becomes `python -` (the code, read from the inherited stdin); this process reaps every
process of the sandbox and polls what rlimits cannot bound: the number of processes, the
memory of all of them together and the disk the workspace holds. Over a limit, or once the
code's own process ends, it kills every other process of the sandbox, so nothing outlives a run.

The code runs as the same user, so the watcher must be out of its reach: as PID 1 of its PID
namespace it gets no signal it has no handler for (SIGKILL and SIGSTOP included), and as a
non-dumpable process it cannot be traced or have its memory read. What the code can still do
to it (lower its limits, renice it) only makes it fail, and when PID 1 ends the kernel ends
every process of the sandbox: it fails closed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

WORKSPACE = "/workspace"
TMPFS = ("/tmp", "/dev/shm")  # noqa: S108 - the sandbox's own, size-limited tmpfs mounts
POLL_SECONDS = 0.02
DISK_POLL_SECONDS = 0.1
# The next workspace walk waits this many times as long as the last one took, so a workspace
# of many files costs the watcher a bounded share of a core rather than all of it.
WALK_SPACING = 5
# The same rules measure the workspace here and in Kennel after the run (sandbox_workspace.py).
MAX_DEPTH = 64
BLOCK = 4096
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OWNER_ALL = 0o700
OPEN_FILES = 1024
PR_SET_DUMPABLE = 4
MB = 1024 * 1024
Visit = Callable[[int, str, str, os.stat_result], None]


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    file_bytes: int
    processes: int
    total_memory_bytes: int
    workspace_bytes: int

    @classmethod
    def parse(cls, arguments: list[str]) -> Limits:
        return cls(*(int(argument) for argument in arguments))


def main() -> int:
    limits = Limits.parse(sys.argv[1:])
    _guard()
    child = os.fork()
    if child == 0:
        _limit(limits)
        os.execv(sys.executable, [sys.executable, "-s", "-"])  # noqa: S606 - fixed argv
    return Watch(child, limits).run()


def _guard() -> None:
    # Not dumpable: the code (same user) may not ptrace this process nor open its /proc files.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    # Without a handler, SIGINT from inside the namespace is not delivered to PID 1 either.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.closerange(3, OPEN_FILES)


def _limit(limits: Limits) -> None:
    # The soft CPU limit sends SIGXCPU, the hard one a second later SIGKILL.
    cpu = limits.cpu_seconds
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    # This watcher counts against the user's processes too.
    tasks = limits.processes + 1
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))


class Watch:
    """Reaps the sandbox's processes and kills them all when a shared limit is passed."""

    def __init__(self, child: int, limits: Limits) -> None:
        self._child = child
        self._limits = limits
        self._next_walk = 0.0
        self._memfd_bytes = 0
        self._cpu_seconds = 0.0

    def run(self) -> int:
        status: int | None = None
        verdict: str | None = None
        while status is None and verdict is None:
            status = self._reap()
            if status is None:
                verdict = self._verdict()
                time.sleep(POLL_SECONDS)
        _kill_all()
        if verdict is not None:
            _say(f"{verdict}: every process of this run was killed")
            return 128 + signal.SIGKILL
        assert status is not None
        return self._exit_code(status)

    def _reap(self) -> int | None:
        """Collect every ended process (orphans are ours to reap); the code's status if it ended."""
        status = None
        while True:
            try:
                pid, code, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return status
            if pid == 0:
                return status
            if pid == self._child:
                status = code
                self._cpu_seconds = usage.ru_utime + usage.ru_stime

    def _verdict(self) -> str | None:
        limits = self._limits
        pids = _processes()
        if len(pids) > limits.processes:
            return f"more than {limits.processes} processes"
        now = time.monotonic()
        if now >= self._next_walk:
            used, too_deep = workspace_usage(WORKSPACE, _open_up)
            self._memfd_bytes = _memfd_bytes(pids)
            self._next_walk = now + max(DISK_POLL_SECONDS, WALK_SPACING * (time.monotonic() - now))
            if too_deep:
                return f"folders nested more than {MAX_DEPTH} deep in the workspace"
            if used > limits.workspace_bytes:
                return f"the workspace went over {limits.workspace_bytes // MB} MB"
        memory = sum(_resident_bytes(pid) for pid in pids) + _shared_bytes() + self._memfd_bytes
        if memory > limits.total_memory_bytes:
            return f"more than {limits.total_memory_bytes // MB} MB of memory in all"
        return None

    def _exit_code(self, status: int) -> int:
        code = os.waitstatus_to_exitcode(status)
        if code >= 0:
            return code
        number, limit = -code, self._limits.cpu_seconds
        if number == signal.SIGXCPU or (number == signal.SIGKILL and self._cpu_seconds >= limit):
            _say(f"CPU time limit of {limit} s reached")
        else:
            _say(f"killed by {signal.Signals(number).name}")
        return 128 + number


def _kill_all() -> None:
    # From PID 1, -1 means every other process of the namespace; then reap them all.
    with contextlib.suppress(ProcessLookupError):  # there was no other
        os.kill(-1, signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _processes() -> list[int]:
    own = os.getpid()
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != own]


def _resident_bytes(pid: int) -> int:
    """Private and shared-memory pages in RAM or swap; file pages are the page cache's."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            lines = status.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    counted = (b"RssAnon:", b"RssShmem:", b"VmSwap:")
    return sum(int(line.split()[1]) * 1024 for line in lines if line.startswith(counted))


def _shared_bytes() -> int:
    """What the sandbox's tmpfs mounts and System V segments hold, mapped or not."""
    used = 0
    for mount in TMPFS:
        info = os.statvfs(mount)
        used += (info.f_blocks - info.f_bfree) * info.f_frsize
    try:
        with open("/proc/sysvipc/shm", "rb") as segments:
            header, *rows = segments.read().splitlines()
    except FileNotFoundError:  # a kernel without System V IPC
        return used
    columns = header.split()
    counted = [columns.index(name) for name in (b"rss", b"swap") if name in columns] or [
        columns.index(b"size")
    ]
    return used + sum(int(row.split()[index]) for row in rows for index in counted)


def _memfd_bytes(pids: list[int]) -> int:
    """Memory files (`os.memfd_create`) held open by any process, each counted once."""
    found: dict[tuple[int, int], int] = {}
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            path = f"/proc/{pid}/fd/{name}"
            try:
                if os.readlink(path).startswith("/memfd:"):
                    info = os.stat(path)
                    found[info.st_dev, info.st_ino] = info.st_blocks * 512
            except OSError:
                continue
    return sum(found.values())


def entry_bytes(info: os.stat_result) -> int:
    """What one workspace entry counts for: its size or its blocks, and at least one block."""
    return max(info.st_size, info.st_blocks * 512, BLOCK)


def workspace_usage(root: str, visit: Visit | None = None) -> tuple[int, bool]:
    """The bytes the folder holds, and whether it nests folders more than MAX_DEPTH deep.

    `visit(folder, name, path, info)` sees each entry before it is counted or entered: its
    folder's descriptor, its name, its path from `root` and its lstat. Folders are opened by
    descriptor, one level from the other, never through a symbolic link: the code may swap
    links in while this runs (Kennel walks as root). Depth first, at most MAX_DEPTH + 1 open
    descriptors, no recursion.
    """
    used, too_deep = 0, False
    stack: list[tuple[int, str, list[str]]] = []
    folder: int | None = os.open(root, FOLDER_FLAGS)
    prefix = ""
    while folder is not None or stack:
        if folder is not None:
            depth = prefix.count("/") + 1
            subfolders: list[str] = []
            for entry in _scan(folder):
                try:
                    info = entry.stat(follow_symlinks=False)
                    if visit is not None:
                        visit(folder, entry.name, prefix + entry.name, info)
                except FileNotFoundError:
                    continue  # removed meanwhile
                used += entry_bytes(info)
                if stat.S_ISDIR(info.st_mode):
                    too_deep = too_deep or depth > MAX_DEPTH
                    if depth <= MAX_DEPTH:
                        subfolders.append(entry.name)
            stack.append((folder, prefix, subfolders))
        parent, parent_prefix, left = stack[-1]
        if left:
            name = left.pop()
            folder, prefix = open_folder(parent, name), f"{parent_prefix}{name}/"
        else:
            os.close(parent)
            stack.pop()
            folder = None
    return used, too_deep


def open_folder(parent: int, name: str) -> int | None:
    """A subfolder's descriptor, or None if it is gone or was swapped for something else."""
    try:
        return os.open(name, FOLDER_FLAGS, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:  # a symbolic link now stands where the folder was
            return None
        raise


def set_mode(parent: int, name: str, kind: int, mode: int) -> None:
    """chmod an entry without following a link: through an O_PATH descriptor's /proc name."""
    handle = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        if stat.S_IFMT(os.fstat(handle).st_mode) == kind:
            os.chmod(f"/proc/self/fd/{handle}", mode)
    finally:
        os.close(handle)


def _open_up(parent: int, name: str, path: str, info: os.stat_result) -> None:
    # The code's own folders, locked to hide what they hold: the watcher opens them again.
    if stat.S_ISDIR(info.st_mode) and info.st_mode & OWNER_ALL != OWNER_ALL:
        set_mode(parent, name, stat.S_IFDIR, stat.S_IMODE(info.st_mode) | OWNER_ALL)


def _scan(folder: int) -> list[os.DirEntry[str]]:
    # scandir() reads a duplicate of the descriptor and leaves ours as it was.
    with os.scandir(folder) as entries:
        return list(entries)


def _say(message: str) -> None:
    print(f"[sandbox: {message}]", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
