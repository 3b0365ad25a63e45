"""Reading what the fake model was sent: the user's text parts and the note on attached files."""

from __future__ import annotations

import json
from typing import Any

from fakellm import TITLE_MARKER, FakeLLM


def user_parts(request: dict[str, Any]) -> list[str]:
    """The text parts of the last user message of a chat request."""
    content = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content if part["type"] == "text"]


def requests_for(llm: FakeLLM, text: str) -> list[dict[str, Any]]:
    """The model requests of the turns whose input was `text` (not the title side requests)."""
    return [
        r
        for r in list(llm.requests)
        if user_parts(r)[0] == text and TITLE_MARKER not in str(r["messages"][0]["content"])
    ]


def listed(note: str) -> list[dict[str, Any]]:
    """The files a note on attachments names: one JSON object a line after its heading."""
    heading, *lines = note.splitlines()
    assert heading.startswith("[Attached to this message: ")
    return [json.loads(line) for line in lines]
