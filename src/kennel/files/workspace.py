"""Workspaces on the local disk: `<data>/workspaces/<organization>/<worker>/<path>`."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import quote

from kennel.clock import Clock
from kennel.errors import InvalidInputError
from kennel.jsonvalues import text_problem
from kennel.models import WorkspaceFile

MAX_PATH_LENGTH = 1024
MAX_NAME_BYTES = 255
"""NAME_MAX of Linux file systems: the longest name of one file or folder, in bytes."""
STAGING = ".staging"
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


@dataclass(frozen=True, slots=True)
class Upload:
    """A file handed in by a client: its name as sent, its declared type and its bytes."""

    filename: str
    media_type: str | None
    source: BinaryIO


def safe_relative_path(name: str) -> str:
    """A workspace-relative POSIX path, refusing anything that could escape the workspace or
    that the file system can't hold. Any other name is an ordinary file, dotfiles included."""
    if not name or "\\" in name or text_problem(name) is not None:
        raise InvalidInputError(f"invalid file name: {name!r}")
    if len(name.encode()) > MAX_PATH_LENGTH:
        raise InvalidInputError(f"invalid file name (longer than {MAX_PATH_LENGTH} bytes)")
    path = PurePosixPath(name)
    parts = path.parts
    if path.is_absolute() or not parts or any(part in ("..", ".") for part in parts):
        raise InvalidInputError(f"invalid file name (no absolute paths or '..'): {name!r}")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        raise InvalidInputError(
            f"invalid file name (a file or folder name is longer than {MAX_NAME_BYTES} bytes)"
        )
    return str(path)


def staging_for(folder: Path) -> Path:
    """Where writes into a workspace folder are prepared: beside it (on the same file system, and
    no worker id starts with a dot), so that no name inside a workspace is taken by them."""
    return folder.parent / STAGING


def check_room(folder: Path, relative: str) -> None:
    """Refuse a write at `relative` that a file or folder already there would make fail: a
    folder of that name, or a file where one of its folders should be."""
    location = folder
    parts = PurePosixPath(relative).parts
    for part in parts[:-1]:
        location = location / part
        if location.exists() and not location.is_dir():
            inside = location.relative_to(folder).as_posix()
            raise InvalidInputError(f"{inside!r} is a file, so {relative!r} can't be inside it")
    if (location / parts[-1]).is_dir():
        raise InvalidInputError(f"{relative!r} is a folder")


def download_url(base_url: str, worker_id: str, path: str) -> str:
    """Where clients download a workspace file: `GET /api/workers/{workerId}/files/{path}`."""
    return f"{base_url.rstrip('/')}/api/workers/{worker_id}/files/{quote(path)}"


def media_type_for(path: str, declared: str | None = None) -> str:
    declared = (declared or "").split(";", 1)[0].strip().lower()
    if declared not in _GENERIC_TYPES:
        return declared
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or "application/octet-stream"


class Workspaces:
    def __init__(self, root: Path, clock: Clock) -> None:
        self._root = root
        self._clock = clock

    def folder(self, organization_id: str, worker_id: str) -> Path:
        return self._root / organization_id / worker_id

    def resolve(self, organization_id: str, worker_id: str, path: str) -> Path:
        """The file's location; refuses paths that leave the workspace, symlinks included."""
        folder = self.folder(organization_id, worker_id)
        target = folder / safe_relative_path(path)
        resolved = target.resolve()
        if not resolved.is_relative_to(folder.resolve()):
            raise InvalidInputError(f"invalid file name: {path!r}")
        return target

    async def save(self, organization_id: str, worker_id: str, upload: Upload) -> WorkspaceFile:
        """Store an upload atomically (a temporary file renamed into place)."""
        path = safe_relative_path(upload.filename)
        target = self.resolve(organization_id, worker_id, path)
        folder = self.folder(organization_id, worker_id)
        await asyncio.to_thread(check_room, folder, path)
        size = await asyncio.to_thread(write_atomically, target, upload.source, folder=folder)
        return WorkspaceFile(path, size, media_type_for(path, upload.media_type), self._clock.now())

    async def delete(self, organization_id: str, worker_id: str, path: str) -> None:
        """Remove a file; one already gone is not an error."""
        target = self.resolve(organization_id, worker_id, path)
        await asyncio.to_thread(target.unlink, missing_ok=True)


def write_atomically(target: Path, source: BinaryIO, *, folder: Path) -> int:
    """Copy `source` to `target` in the workspace `folder`, through a temporary file prepared
    outside it and renamed into place."""
    staging = staging_for(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=staging)
    try:
        with os.fdopen(handle, "wb") as out:
            source.seek(0)
            shutil.copyfileobj(source, out, 1024 * 1024)
            size = out.tell()
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return size
