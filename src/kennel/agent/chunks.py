"""A turn told as AI SDK UI message stream chunks (plain dicts), per spec §16.19.

The writer hands each chunk to the run's `emit` and builds the assistant's `UIMessage` from the
same chunks, so `Worker.messages` holds what a client that watched the stream holds. Every id it
makes is derived from the message id and a counter: a run taken over after a crash (which goes
on as a new message id) never repeats an id of the stream it continues.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic_ai.messages import (
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)

from kennel.agent.messages import UIMessageBuilder
from kennel.agent.stream import Chunk, without_proto

_KINDS = {TextPart: "text", ThinkingPart: "reasoning"}
INTERRUPTED_CALL = "interrupted: the server stopped before this call finished"


class ChunkWriter:
    """Writes one turn's chunks: steps, text, reasoning, tool calls and their results."""

    def __init__(self, message_id: str, emit: Callable[[Chunk], None]) -> None:
        self._emit_chunk = emit
        self._builder = UIMessageBuilder(message_id)
        self.message_id = message_id
        self.started = False
        self._in_step = False
        self._ids = 0
        self._mark = 0
        self._open: dict[int, tuple[str, str]] = {}
        """Parts of the response being streamed, by index: their kind and chunk id."""

    def resume(self, told: list[Chunk]) -> None:
        """Go on with a stream that already holds `told` (a run taken over after a crash): the
        message is rebuilt from it, and what the lost run left open is closed, so that a
        reader sees a valid stream. Ids made from here on carry the length of `told`, which no
        earlier run's ids do."""
        self._mark = len(told)
        for chunk in told:
            self._builder.add(chunk)
        builder = self._builder
        self.started = builder.started
        for kind, chunk_id in builder.open_ids():
            self._emit({"type": f"{kind}-end", "id": chunk_id})
        for call_id in builder.unanswered_calls():
            self._emit(
                {
                    "type": "tool-output-error",
                    "toolCallId": call_id,
                    "errorText": INTERRUPTED_CALL,
                    "providerExecuted": True,
                }
            )
        if builder.in_step:
            self._emit({"type": "finish-step"})

    def start(self) -> None:
        if not self.started:
            self._emit({"type": "start", "messageId": self.message_id})

    def start_step(self) -> None:
        self.start()
        self._emit({"type": "start-step"})
        self._in_step = True

    def finish_step(self) -> None:
        self._close_open()
        if self._in_step:
            self._emit({"type": "finish-step"})
            self._in_step = False

    def finish(self, reason: str) -> None:
        self.finish_step()
        self._emit({"type": "finish", "finishReason": reason})

    def fail(self, message: str, *, reason: str = "error") -> None:
        """An error chunk (unless `message` is empty), then the end of the stream."""
        self.start()
        self._close_open()
        if message:
            self._emit({"type": "error", "errorText": message})
        if self._in_step:
            self._emit({"type": "finish-step"})
            self._in_step = False
        self._emit({"type": "finish", "finishReason": reason})

    def whole_part(self, part: Any) -> None:
        """A text or reasoning part that arrived whole (a request that was not streamed)."""
        if not isinstance(part, TextPart | ThinkingPart) or not part.content:
            return
        kind = _KINDS[type(part)]
        chunk_id = self._new_id()
        self._emit({"type": f"{kind}-start", "id": chunk_id})
        self._emit({"type": f"{kind}-delta", "id": chunk_id, "delta": part.content})
        self._emit({"type": f"{kind}-end", "id": chunk_id})

    def stream_event(self, event: Any) -> None:
        """One event of a streamed model response."""
        if isinstance(event, PartStartEvent):
            self._close(event.index)
            part = event.part
            if isinstance(part, ToolCallPart):
                self._start_call(event.index, part)
            elif isinstance(part, TextPart | ThinkingPart):
                kind, chunk_id = _KINDS[type(part)], self._new_id()
                self._open[event.index] = (kind, chunk_id)
                self._emit({"type": f"{kind}-start", "id": chunk_id})
                if part.content:
                    self._emit({"type": f"{kind}-delta", "id": chunk_id, "delta": part.content})
        elif isinstance(event, PartDeltaEvent):
            self._delta(event.index, event.delta)

    def tool_input(self, call: ToolCallPart) -> None:
        """A call whose arguments were accepted: it is about to run."""
        self._emit(
            {
                "type": "tool-input-available",
                "toolCallId": call.tool_call_id,
                "toolName": call.tool_name,
                "input": without_proto(_arguments(call)),
                "providerExecuted": True,
            }
        )

    def tool_input_error(self, call: ToolCallPart, error: str) -> None:
        """A call whose arguments were refused: it never ran."""
        self._emit(
            {
                "type": "tool-input-error",
                "toolCallId": call.tool_call_id,
                "toolName": call.tool_name,
                "input": without_proto(_arguments(call)),
                "errorText": error,
                "providerExecuted": True,
            }
        )

    def tool_output(self, call_id: str, output: Any) -> None:
        self._emit(
            {
                "type": "tool-output-available",
                "toolCallId": call_id,
                "output": without_proto(output),
                "providerExecuted": True,
            }
        )

    def tool_error(self, call_id: str, error: str) -> None:
        self._emit(
            {
                "type": "tool-output-error",
                "toolCallId": call_id,
                "errorText": error,
                "providerExecuted": True,
            }
        )

    def beside(self, chunk: Chunk) -> None:
        """A chunk a tool asked for beside its output (a `source-url`, a `file`)."""
        self._emit(chunk)

    def message(self) -> dict[str, Any]:
        """The assistant's `UIMessage` so far."""
        return self._builder.message()

    def _emit(self, chunk: Chunk) -> None:
        if chunk["type"] == "start":
            self.started = True
        self._builder.add(chunk)
        self._emit_chunk(chunk)

    def _new_id(self) -> str:
        self._ids += 1
        if self._mark:
            return f"{self.message_id}-{self._mark}-{self._ids}"
        return f"{self.message_id}-{self._ids}"

    def _start_call(self, index: int, call: ToolCallPart) -> None:
        self._open[index] = ("tool", call.tool_call_id)
        self._emit(
            {
                "type": "tool-input-start",
                "toolCallId": call.tool_call_id,
                "toolName": call.tool_name,
                "providerExecuted": True,
            }
        )
        if isinstance(call.args, str):
            self._input_delta(call.tool_call_id, call.args)

    def _delta(self, index: int, delta: Any) -> None:
        opened = self._open.get(index)
        if opened is None:
            return
        kind, chunk_id = opened
        if isinstance(delta, TextPartDelta | ThinkingPartDelta) and kind != "tool":
            if delta.content_delta:
                self._emit({"type": f"{kind}-delta", "id": chunk_id, "delta": delta.content_delta})
        elif isinstance(delta, ToolCallPartDelta) and isinstance(delta.args_delta, str):
            self._input_delta(chunk_id, delta.args_delta)

    def _input_delta(self, call_id: str, text: str) -> None:
        if text:
            self._emit({"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": text})

    def _close(self, index: int) -> None:
        opened = self._open.pop(index, None)
        if opened is not None and opened[0] != "tool":
            kind, chunk_id = opened
            self._emit({"type": f"{kind}-end", "id": chunk_id})

    def _close_open(self) -> None:
        for index in list(self._open):
            self._close(index)


def _arguments(call: ToolCallPart) -> Any:
    try:
        return call.args_as_dict()
    except ValueError:
        return call.args
