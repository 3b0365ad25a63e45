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
from kennel.models import WorkspaceFile

MAX_PATH_LENGTH = 1024
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


@dataclass(frozen=True, slots=True)
class Upload:
    """A file handed in by a client: its name as sent, its declared type and its bytes."""

    filename: str
    media_type: str | None
    source: BinaryIO


def safe_relative_path(name: str) -> str:
    """A workspace-relative POSIX path, refusing anything that could escape the workspace."""
    if not name or len(name) > MAX_PATH_LENGTH or "\x00" in name or "\\" in name:
        raise InvalidInputError(f"invalid file name: {name!r}")
    path = PurePosixPath(name)
    parts = path.parts
    if path.is_absolute() or not parts or any(part in ("..", ".") for part in parts):
        raise InvalidInputError(f"invalid file name (no absolute paths or '..'): {name!r}")
    return str(path)


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
        size = await asyncio.to_thread(_write_atomically, target, upload.source)
        return WorkspaceFile(path, size, media_type_for(path, upload.media_type), self._clock.now())

    async def delete(self, organization_id: str, worker_id: str, path: str) -> None:
        """Remove a file; one already gone is not an error."""
        target = self.resolve(organization_id, worker_id, path)
        await asyncio.to_thread(target.unlink, missing_ok=True)


def _write_atomically(target: Path, source: BinaryIO) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
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
