"""AI SDK UI-message-stream chunks (plain dicts), per spec §16.19: their encoding, the ends a
stream gets outside the agent loop, and the rules strict AI SDK clients enforce on them
(server-run tools are `providerExecuted`, keys typed "unknown" are always present, `__proto__`
never appears). `chunks.ChunkWriter` writes a turn's chunks."""

from __future__ import annotations

from typing import Any

from kennel import jsonvalues
from kennel.models import CANCELLED

Chunk = dict[str, Any]


def without_proto(value: Any) -> Any:
    """A copy of a JSON value with every `__proto__` key removed (AI SDK parsers reject them)."""
    if isinstance(value, dict):
        return {key: without_proto(item) for key, item in value.items() if key != "__proto__"}
    if isinstance(value, list):
        return [without_proto(item) for item in value]
    return value


ABORT_CHUNK: Chunk = {"type": "abort", "reason": CANCELLED}
"""How the stream of a cancelled turn ends (then `data-worker` and `[DONE]`)."""


def stream_end(ending: list[Chunk], *, started: bool, message_id: str) -> list[Chunk]:
    """The chunks that end a turn's stream outside the agent loop: `ending`, behind a `start`
    chunk unless the stream has one already (AI SDK clients want `start` first, §16.19)."""
    return ending if started else [{"type": "start", "messageId": message_id}, *ending]


def encode_chunk(chunk: Chunk) -> str:
    """A chunk as stored in the task's event log and sent as SSE `data:` (NUL-free, as the
    database needs and as the turn's stored text will be)."""
    return jsonvalues.dumps(chunk)
