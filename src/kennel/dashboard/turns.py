"""A turn as the task page shows it: its parts, what it used against its budget, and how it
ended, in plain words. Model and tool output stays data here; templates escape it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kennel.config import Settings
from kennel.models import CANCELLED, Turn, Usage
from kennel.services.billing import budget_caps, credits_for

_FILE_URL = re.compile(r"/api/workers/([^/]+)/files/(.+)$")
_REASONS = {
    "budget_exhausted": "The budget ran out, so the worker answered with what it had found.",
    CANCELLED: "Cancelled before it finished.",
}


@dataclass(frozen=True, slots=True)
class Part:
    kind: str
    """`text`, `reasoning`, `tool`, `source` or `file`."""
    text: str = ""
    name: str = ""
    url: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Meter:
    label: str
    used: int
    cap: int | None

    @property
    def share(self) -> float:
        return 0.0 if not self.cap else min(1.0, self.used / self.cap)


@dataclass(frozen=True, slots=True)
class TurnView:
    turn: Turn
    parts: list[Part]
    meters: list[Meter]
    notice: str | None
    failed: bool
    events_after: int
    """Where the live view starts reading the task's log for this turn."""

    @property
    def is_running(self) -> bool:
        return not self.turn.status.is_terminal


def view_of(
    turn: Turn, settings: Settings, model_name: str | None, task_event_seq: int
) -> TurnView:
    """`task_event_seq` is the task's last event now: a turn not started yet writes after it."""
    after = task_event_seq if turn.first_event_seq is None else turn.first_event_seq - 1
    failed = turn.error is not None
    notice = None
    if turn.error is not None:
        notice = f"It failed: {turn.error.message}"
    elif turn.incomplete_reason:
        notice = _REASONS.get(turn.incomplete_reason, f"Incomplete: {turn.incomplete_reason}.")
    usage = meters(turn, settings, model_name)
    return TurnView(turn, _parts(turn), usage, notice, failed, max(0, after))


def meters(turn: Turn, settings: Settings, model_name: str | None) -> list[Meter]:
    """Usage against the caps of the turn's budget; the credit cap is what the token and tool
    caps would cost at the model's price."""
    caps = budget_caps(turn.budget, settings)
    usage = turn.usage
    credit_cap = None
    if caps.tokens is not None and caps.tool_calls is not None:
        most = Usage(input_tokens=caps.tokens, tool_calls=caps.tool_calls)
        credit_cap = credits_for(most, model_name or "", settings.model_prices)
    return [
        Meter("tokens", usage.input_tokens + usage.output_tokens, caps.tokens),
        Meter("model requests", usage.requests, caps.requests),
        Meter("tool calls", usage.tool_calls, caps.tool_calls),
        Meter("credits", usage.credits, credit_cap),
    ]


def _parts(turn: Turn) -> list[Part]:
    message = turn.ui_message or {}
    raw = message.get("parts")
    if not isinstance(raw, list):
        return [Part("text", turn.output_text)] if turn.output_text else []
    found = [part for item in raw if isinstance(item, dict) and (part := _part(item))]
    return found


def _part(item: dict[str, Any]) -> Part | None:
    kind = str(item.get("type", ""))
    if kind == "text" and item.get("text"):
        return Part("text", str(item["text"]))
    if kind == "reasoning" and item.get("text"):
        return Part("reasoning", str(item["text"]))
    if kind.startswith("tool-"):
        return Part("tool", name=kind.removeprefix("tool-"), data=item)
    if kind == "source-url" and is_web_url(item.get("url")):
        return Part("source", text=str(item.get("title") or item["url"]), url=str(item["url"]))
    if kind == "file":
        return _file_part(str(item.get("url", "")))
    return None


def _file_part(url: str) -> Part | None:
    """A file link of the API, as the dashboard's own download link (the session's)."""
    found = _FILE_URL.search(url)
    if found is None:
        return None
    worker_id, path = found.groups()
    name = path.rsplit("/", 1)[-1]
    return Part("file", text=name, url=f"/worker/{worker_id}/files/{path}")


def is_web_url(url: object) -> bool:
    return isinstance(url, str) and url.lower().startswith(("http://", "https://"))
