"""pydantic-ai run events → AI SDK UI-message-stream chunks (plain dicts), per spec §16.19.

pydantic-ai's own Vercel AI event stream does the translation; this subclass only enforces
what strict AI SDK clients demand and what Kennel adds: server-run tools are marked
`providerExecuted`, keys typed "unknown" are always present, `__proto__` never appears, and
the library's pydantic-ai-specific message metadata and `[DONE]` marker are left to the SSE layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai.ui.vercel_ai import VercelAIEventStream
from pydantic_ai.ui.vercel_ai.response_types import (
    BaseChunk,
    DoneChunk,
    ErrorChunk,
    MessageMetadataChunk,
)

from kennel import jsonvalues
from kennel.agent.failures import BUDGET_EXHAUSTED, classify, describe
from kennel.models import CANCELLED, TurnError

Chunk = dict[str, Any]

_PROVIDER_EXECUTED = frozenset(
    {
        "tool-input-start",
        "tool-input-available",
        "tool-input-error",
        "tool-output-available",
        "tool-output-error",
    }
)
_REQUIRED_UNKNOWN = {
    "tool-input-available": "input",
    "tool-input-error": "input",
    "tool-output-available": "output",
}


class TurnEventStream(VercelAIEventStream[Any, Any]):
    """Translates one turn's run and remembers why it failed, if it did.

    The error chunk carries Kennel's classified, client-safe message. A spent budget is not an
    error for clients: the turn completes with what it has (spec §16.8).
    """

    model_name: str | None = None
    """The `provider:model` name the turn runs on, for the failure's hint and log line."""
    failure: TurnError | None = None
    failure_detail: str | None = None
    """The operator's account of the failure (see `describe`): for the log, never for clients."""

    async def on_error(self, error: Exception) -> AsyncIterator[BaseChunk]:
        self.failure = failure = classify(error, self.model_name)
        self.failure_detail = describe(error, self.model_name)
        async for chunk in super().on_error(error):
            if isinstance(chunk, ErrorChunk):
                if failure.code == BUDGET_EXHAUSTED:
                    self._finish_reason = "length"
                    continue
                chunk = ErrorChunk(error_text=failure.message)
            yield chunk


def to_chunk(chunk: BaseChunk) -> Chunk | None:
    """The wire dict of a library chunk, or None for chunks Kennel does not forward."""
    if isinstance(chunk, DoneChunk | MessageMetadataChunk):
        return None
    data: Chunk = chunk.model_dump(mode="json", by_alias=True, exclude_none=True)
    kind = data["type"]
    if kind in _PROVIDER_EXECUTED:
        data["providerExecuted"] = True
    required = _REQUIRED_UNKNOWN.get(kind)
    if required is not None:
        data[required] = without_proto(data.get(required))
    elif kind.startswith("data-"):
        data["data"] = without_proto(data.get("data"))
    return data


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
