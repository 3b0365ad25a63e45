"""One worker's workspace folder as its tools see it: list, read, write, delete, nothing outside.

Every path is workspace-relative (`safe_relative_path`: no absolute paths, no `..`), and no
component of it may be a symbolic link: a link is refused rather than followed, so neither a link
the sandbox planted nor one in an upload can lead a file tool out of the workspace.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from kennel.errors import InvalidInputError, NotFoundError
from kennel.files.workspace import check_room, media_type_for, safe_relative_path, write_atomically
from kennel.models import WorkspaceFile

MAX_LISTED = 1000
LISTED_ON_THE_LOOP = 64
"""A listing that meets at most this many directory entries runs on the event loop: a hop to
a thread and back costs more (about 0.4 ms, most of it waiting for the loop to hand over the
GIL) than reading a few dozen entries. A larger workspace is listed in a thread, as the
entries a listing reads before it knows are bounded too (one batch of the directory's)."""


class _TooMany(Exception):
    """A listing met more entries than it may read on the event loop."""


class WorkspaceFolder:
    """File operations confined to one workspace folder; blocking work runs in a thread,
    except a small listing. Writes are prepared outside the folder, so every file in it is
    listed."""

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        """The folder itself (it may not exist yet), for tools that need a real directory."""
        return self._root

    async def list_files(self, prefix: str = "") -> list[WorkspaceFile]:
        """Files under `prefix` (a folder, or the whole workspace), sorted by path."""
        try:
            return self._list(prefix, most=LISTED_ON_THE_LOOP)
        except _TooMany:
            return await asyncio.to_thread(self._list, prefix)

    async def stat(self, path: str) -> WorkspaceFile | None:
        """The file at `path`, or None if there is none."""
        return await asyncio.to_thread(self._stat, path)

    async def read(self, path: str) -> bytes:
        return await asyncio.to_thread(self._read, path)

    async def write(self, path: str, data: bytes) -> WorkspaceFile:
        """Create or replace a file atomically (a temporary file renamed into place)."""
        return await asyncio.to_thread(self._write, path, data)

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(self._delete, path)

    async def fingerprints(self) -> dict[str, tuple[int, int]]:
        """Size and modification time of every file: compare two to see what changed."""
        files = await asyncio.to_thread(self._walk, self._root)
        return {relative: (info.st_size, info.st_mtime_ns) for relative, info in files}

    def _locate(self, path: str) -> Path:
        """The file's location, refusing any component that is a symbolic link."""
        relative = safe_relative_path(path)
        location = self._root
        for part in Path(relative).parts:
            location = location / part
            if location.is_symlink():
                raise InvalidInputError(f"{path!r} goes through a symbolic link, which is refused")
        return location

    def _list(self, prefix: str, most: int | None = None) -> list[WorkspaceFile]:
        """The listing; with `most`, `_TooMany` once it has met more entries than that."""
        folder = prefix.strip().strip("/")
        start = self._root if folder in ("", ".") else self._locate(folder)
        if not start.is_dir():
            raise NotFoundError(f"no folder {prefix!r} in the workspace")
        found = [_record(relative, info) for relative, info in self._walk(start, most)]
        return sorted(found, key=lambda file: file.path)

    def _walk(self, start: Path, most: int | None = None) -> list[tuple[str, os.stat_result]]:
        """Every regular file under `start` with its `lstat`; symbolic links are neither
        followed nor listed, and a folder that can't be read is left out."""
        found: list[tuple[str, os.stat_result]] = []
        if not start.is_dir():
            return found
        met = 0
        folders = [start]
        while folders:
            try:
                entries = os.scandir(folders.pop())
            except OSError:
                continue
            with entries:
                for entry in entries:
                    met += 1
                    if most is not None and met > most:
                        raise _TooMany
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                        continue
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        relative = Path(entry.path).relative_to(self._root).as_posix()
                        found.append((relative, info))
        return found

    def _stat(self, path: str) -> WorkspaceFile | None:
        location = self._locate(path)
        try:
            info = os.lstat(location)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return _record(safe_relative_path(path), info)

    def _read(self, path: str) -> bytes:
        location = self._locate(path)
        if not location.is_file():
            raise NotFoundError(f"no file {path!r} in the workspace")
        return location.read_bytes()

    def _write(self, path: str, data: bytes) -> WorkspaceFile:
        location = self._locate(path)
        relative = safe_relative_path(path)
        check_room(self._root, relative)
        write_atomically(location, io.BytesIO(data), folder=self._root)
        return _record(relative, os.lstat(location))

    def _delete(self, path: str) -> None:
        location = self._locate(path)
        if not location.is_file():
            raise NotFoundError(f"no file {path!r} in the workspace")
        location.unlink()


def _record(relative: str, info: os.stat_result) -> WorkspaceFile:
    updated = datetime.fromtimestamp(info.st_mtime, tz=UTC)
    return WorkspaceFile(relative, info.st_size, media_type_for(relative), updated)
