"""The user prompt of a turn: what the user wrote, and a note naming the files sent with it.

The note is part of the prompt, so it is stored with the turn's model messages: later turns
of the task see it in their history, and a turn run again after a crash sends the same text.
File names and media types come from whoever sent the files, so each file is written as one
JSON object on its own line: a name can't break out of its line or pose as Kennel's words.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence, Set
from pathlib import PurePosixPath

from kennel.agent.tools.sandbox_command import WORKSPACE
from kennel.models import AttachedFile

MAX_LISTED = 50
"""Files named one by one; a longer list ends by pointing at `list_files`."""

_NON_ASCII = re.compile(r"[^\x00-\x7e]")
# Characters JSON leaves as they are that still break or disguise a line: C1 controls, line
# and paragraph separators, bidirectional overrides and other invisible formatting.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def turn_prompt(text: str, files: Sequence[AttachedFile], tools: Set[str]) -> str | list[str]:
    """The user prompt of the turn: `text`, and the note as a second text part when files
    came with it."""
    if not files:
        return text
    return [text, attachment_note(files, tools)]


def attachment_note(files: Sequence[AttachedFile], tools: Set[str]) -> str:
    """A note naming each file (name, media type, size, workspace path) and how to open it."""
    lines = [_heading(len(files), tools)]
    lines += [_describe(file) for file in files[:MAX_LISTED]]
    hidden = len(files) - MAX_LISTED
    if hidden > 0:
        lines.append(f"... and {hidden} more; list_files shows every file in the workspace.")
    return "\n".join(lines)


def _heading(count: int, tools: Set[str]) -> str:
    files, them = ("1 file", "it") if count == 1 else (f"{count} files", "them")
    how = []
    if "read_file" in tools:
        how.append(f"read {them} with read_file (give the path)")
    if "run_python" in tools:
        how.append(f"open {them} in run_python, whose working directory is {WORKSPACE}")
    opening = f" You can {' or '.join(how)}." if how else ""
    return f"[Attached to this message: {files}, saved in your workspace.{opening}]"


def _describe(file: AttachedFile) -> str:
    entry = {
        "name": PurePosixPath(file.path).name,
        "mediaType": file.media_type,
        "sizeBytes": file.size,
        "path": file.path,
    }
    # Readable names stay readable (the model passes them back to its tools as written).
    return _NON_ASCII.sub(_escaped, json.dumps(entry, ensure_ascii=False))


def _escaped(match: re.Match[str]) -> str:
    character = match.group()
    if unicodedata.category(character) in _INVISIBLE:
        return json.dumps(character)[1:-1]
    return character
