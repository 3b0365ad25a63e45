"""Workspace file tools: `list_files`, `read_file`, `write_file`, `edit_file`, `delete_file`.

The docstrings are what the model reads. Failures (a missing file, an ambiguous edit, a path
outside the workspace) reach the model as failed tool results, never as a failed turn.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai import RunContext, ToolReturn
from pydantic_ai.exceptions import ToolFailed

from kennel.agent.toolbox import Folder, Toolbox

MAX_READ_CHARACTERS = 100_000
MAX_READ_BYTES = 16 * 1024 * 1024
MAX_WRITE_BYTES = 10 * 1024 * 1024
MAX_LISTED = 500


def _folder(ctx: RunContext[Toolbox]) -> Folder:
    folder = ctx.deps.folder
    if folder is None:
        raise ToolFailed("this worker has no workspace")
    return folder


async def _read(folder: Folder, path: str) -> bytes:
    """A file's bytes, refusing files too large to hold for a tool call."""
    file = await folder.stat(path)
    if file is not None and file.size > MAX_READ_BYTES:
        raise ToolFailed(
            f"{path} has {file.size} bytes, more than file tools read ({MAX_READ_BYTES}); "
            "inspect it with run_python"
        )
    return await folder.read(path)


async def list_files(ctx: RunContext[Toolbox], folder: str = "") -> dict[str, Any]:
    """List the files in the workspace (or in one folder of it), with their sizes.

    Args:
        folder: A folder of the workspace, e.g. `reports`; empty for the whole workspace.
    """
    files = await _folder(ctx).list_files(folder)
    listed = [
        {"path": file.path, "size": file.size, "mediaType": file.media_type}
        for file in files[:MAX_LISTED]
    ]
    result: dict[str, Any] = {"files": listed, "count": len(files)}
    if len(files) > MAX_LISTED:
        result["note"] = f"only the first {MAX_LISTED} files are listed; list a folder instead"
    return result


async def read_file(
    ctx: RunContext[Toolbox],
    path: str,
    start_line: int | None = None,
    end_line: int | None = None,
    offset: int | None = None,
    length: int | None = None,
) -> str:
    """Read a text file of the workspace, whole or in part.

    Give `start_line`/`end_line` (1-based, inclusive) for a range of lines, or `offset`/`length`
    for a range of bytes. Long files are cut; the reply then says which range to read next.

    Args:
        path: The file's path in the workspace, e.g. `notes/todo.md`.
        start_line: First line to read (1-based).
        end_line: Last line to read (inclusive).
        offset: First byte to read (0-based).
        length: Number of bytes to read from `offset`.
    """
    data = await _read(_folder(ctx), path)
    if offset is not None or length is not None:
        start = max(offset or 0, 0)
        data = data[start : None if length is None else start + max(length, 0)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if offset is None and length is None:
            raise ToolFailed(
                f"{path} is not a UTF-8 text file ({len(data)} bytes); "
                "read a byte range of it, or inspect it with run_python"
            ) from None
        text = data.decode("utf-8", errors="replace")
    if start_line is not None or end_line is not None:
        lines = text.splitlines(keepends=True)
        first = max(start_line or 1, 1)
        text = "".join(lines[first - 1 : end_line])
    if len(text) > MAX_READ_CHARACTERS:
        shown = text[:MAX_READ_CHARACTERS]
        next_line = (start_line or 1) + shown.count("\n")
        return (
            shown + f"\n[cut at {MAX_READ_CHARACTERS} characters; "
            f"continue with start_line={next_line}]"
        )
    return text


async def write_file(ctx: RunContext[Toolbox], path: str, content: str) -> ToolReturn:
    """Create a file in the workspace, or replace its whole content.

    Args:
        path: The file's path in the workspace; missing folders are created.
        content: The complete new content of the file (text).
    """
    data = content.encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ToolFailed(f"the content is larger than {MAX_WRITE_BYTES} bytes")
    written = await _folder(ctx).write(path, data)
    return ToolReturn(
        f"wrote {written.size} bytes to {written.path}", metadata=ctx.deps.add_file(written)
    )


async def edit_file(
    ctx: RunContext[Toolbox], path: str, old_text: str, new_text: str
) -> ToolReturn:
    """Replace one exact piece of text in a workspace file.

    `old_text` must appear exactly once in the file (include surrounding lines to make it
    unique); it is replaced by `new_text`.

    Args:
        path: The file's path in the workspace.
        old_text: The exact text to replace, whitespace included.
        new_text: The text to put in its place.
    """
    if not old_text:
        raise ToolFailed("old_text is empty: give the exact text to replace")
    folder = _folder(ctx)
    try:
        text = (await _read(folder, path)).decode("utf-8")
    except UnicodeDecodeError:
        raise ToolFailed(f"{path} is not a UTF-8 text file") from None
    found = text.count(old_text)
    if found != 1:
        where = "does not appear" if found == 0 else f"appears {found} times"
        raise ToolFailed(f"old_text {where} in {path}; it must appear exactly once")
    data = text.replace(old_text, new_text).encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ToolFailed(f"the file would be larger than {MAX_WRITE_BYTES} bytes")
    written = await folder.write(path, data)
    return ToolReturn(f"edited {written.path}", metadata=ctx.deps.add_file(written))


async def delete_file(ctx: RunContext[Toolbox], path: str) -> str:
    """Delete a file of the workspace.

    Args:
        path: The file's path in the workspace.
    """
    await _folder(ctx).delete(path)
    ctx.deps.remove_file(path)
    return f"deleted {path}"
