"""Builds the assistant's AI SDK `UIMessage` from the chunks of one turn.

Mirrors the AI SDK's own `readUIMessageStream` closely enough that `Worker.messages` shows
what a client that watched the stream would hold; parts follow the AI SDK's `UIMessage`
shapes and never carry `null` in an optional key (spec §16.19 i).
"""

from __future__ import annotations

from typing import Any

Part = dict[str, Any]


class UIMessageBuilder:
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.parts: list[Part] = []
        self._open: dict[str, Part] = {}
        self._tools: dict[str, Part] = {}
        self.started = False
        self.in_step = False

    def add(self, chunk: dict[str, Any]) -> None:
        kind: str = chunk["type"]
        if kind == "start":
            self.started = True
            if chunk.get("messageId"):
                self.message_id = chunk["messageId"]
        elif kind == "start-step":
            self.parts.append({"type": "step-start"})
            self.in_step = True
        elif kind == "finish-step":
            self.in_step = False
        elif kind in ("text-start", "reasoning-start"):
            opened: Part = {"type": kind.removesuffix("-start"), "text": "", "state": "streaming"}
            self._open[chunk["id"]] = opened
            self.parts.append(opened)
        elif kind in ("text-delta", "reasoning-delta"):
            if (streaming := self._open.get(chunk["id"])) is not None:
                streaming["text"] += chunk["delta"]
        elif kind in ("text-end", "reasoning-end"):
            if (ended := self._open.pop(chunk["id"], None)) is not None:
                ended["state"] = "done"
        elif kind.startswith("tool-"):
            self._add_tool_chunk(kind, chunk)
        elif kind == "source-url":
            source = {"type": "source-url", "sourceId": chunk["sourceId"], "url": chunk["url"]}
            if "title" in chunk:
                source["title"] = chunk["title"]
            self.parts.append(source)
        elif kind == "file":
            file = {"type": "file", "mediaType": chunk["mediaType"], "url": chunk["url"]}
            self.parts.append(file)
        elif kind.startswith("data-") and not chunk.get("transient"):
            data_part = {"type": kind, "data": chunk["data"]}
            if "id" in chunk:
                data_part["id"] = chunk["id"]
            self.parts.append(data_part)

    def _add_tool_chunk(self, kind: str, chunk: dict[str, Any]) -> None:
        call_id = chunk["toolCallId"]
        part = self._tools.get(call_id)
        if part is None:
            if "toolName" not in chunk:
                return
            part = {"type": f"tool-{chunk['toolName']}", "toolCallId": call_id}
            if chunk.get("providerExecuted"):
                part["providerExecuted"] = True
            self._tools[call_id] = part
            self.parts.append(part)
        if kind == "tool-input-start":
            part["state"] = "input-streaming"
        elif kind == "tool-input-available":
            part.update(state="input-available", input=chunk["input"])
        elif kind == "tool-input-error":
            part.update(state="output-error", input=chunk["input"], errorText=chunk["errorText"])
        elif kind == "tool-output-available":
            part.update(state="output-available", output=chunk["output"])
        elif kind == "tool-output-error":
            part.update(state="output-error", errorText=chunk["errorText"])
            part.setdefault("input", None)

    def open_ids(self) -> list[tuple[str, str]]:
        """Text and reasoning parts started and not ended: (kind, chunk id)."""
        return [(part["type"], chunk_id) for chunk_id, part in self._open.items()]

    def unanswered_calls(self) -> list[str]:
        """Tool calls announced that have no result (nor an error) yet."""
        return [
            call_id
            for call_id, part in self._tools.items()
            if part.get("state") in ("input-streaming", "input-available")
        ]

    def message(self) -> dict[str, Any]:
        """The message so far; parts still streaming are closed as they stand."""
        parts = []
        for part in self.parts:
            if part.get("state") == "streaming":
                part = {**part, "state": "done"}
            elif part.get("state") == "input-streaming":
                part = {**part, "state": "input-available", "input": part.get("input")}
            parts.append(part)
        return {"id": self.message_id, "role": "assistant", "parts": parts}
