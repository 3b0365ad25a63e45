"""Ask the real Vercel AI SDK (npm ``ai``) whether Kennel's output is acceptable.

Kennel speaks "AI SDK UI message stream v1" so that stock ``useChat`` clients
can consume it. Checking our bytes against our own reading of that protocol
would only prove we agree with ourselves, so these helpers hand the bytes to
``tests/js/validate-stream.mjs``, which runs the SDK's own SSE parser, chunk
schema, ``useChat`` state machine and ``validateUIMessages``.

Needs ``node`` on PATH and ``npm ci`` in ``tests/js`` (``make install`` does
it); tests using this module carry the ``node`` marker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "validate-stream.mjs"
TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class StreamCheck:
    """The SDK's verdict; ``chunks`` are the chunks it validated before any failure."""

    ok: bool
    error: str | None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


def validate_ui_stream(sse_text: str) -> StreamCheck:
    """Validate a whole SSE response body the way ``DefaultChatTransport`` + ``useChat`` do."""
    return _run(sse_text, [])


def validate_ui_messages(messages: list[dict[str, Any]]) -> StreamCheck:
    """Validate UIMessages with the SDK's ``validateUIMessages``."""
    return _run(json.dumps(messages), ["--messages"])


def _run(stdin_text: str, args: list[str]) -> StreamCheck:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH")
    completed = subprocess.run(
        [node, str(SCRIPT), *args],
        input=stdin_text.encode("utf-8"),
        capture_output=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    stderr = completed.stderr.decode("utf-8", "replace")
    if completed.returncode != 0:
        # The script reports every verdict with exit code 0; anything else is a harness bug.
        raise RuntimeError(f"{SCRIPT.name} exited with {completed.returncode}:\n{stderr}")
    try:
        verdict = json.loads(completed.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"{SCRIPT.name} printed no JSON verdict: {completed.stdout!r}\n{stderr}"
        ) from exc
    return StreamCheck(
        ok=bool(verdict["ok"]),
        error=verdict.get("error"),
        chunks=list(verdict.get("chunks", [])),
        messages=list(verdict.get("messages", [])),
    )
