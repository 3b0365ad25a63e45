"""Server-sent events in the AI SDK UI-message-stream format (spec §6.2, §16.3, §16.19)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from kennel.api.deps import Services
from kennel.api.streaming import WatchedStream
from kennel.errors import InvalidInputError
from kennel.models import Event, Worker
from kennel.services.tasks import WorkerState

HEADERS = {
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}
PING = b": ping\n\n"
MAX_EVENT_ID = 2**63 - 1
"""Event ids are sequence numbers in a BIGINT column: a larger one can't even be looked up."""
DONE = b"data: [DONE]\n\n"


def frame(event: Event) -> bytes:
    return f"id: {event.seq}\ndata: {event.body}\n\n".encode()


def data_frame(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def sse_response(
    body: AsyncIterator[bytes], headers: dict[str, str] | None = None
) -> WatchedStream:
    return WatchedStream(
        body, media_type="text/event-stream", headers={**HEADERS, **(headers or {})}
    )


def resume_point(last_event_id: str | None, starting_after: int | None) -> int:
    """Where a reader resumes: after `Last-Event-ID` (header) or `?startingAfter=`, else 0.
    Checked before the stream starts: once it has, a failure can only drop the connection."""
    if starting_after is not None:
        return max(0, starting_after)
    text = (last_event_id or "").strip()
    if not (text.isascii() and text.isdigit()):  # `isdigit` alone takes "²", which int() refuses
        return 0
    if len(text) > len(str(MAX_EVENT_ID)) or int(text) > MAX_EVENT_ID:
        raise InvalidInputError(f"Last-Event-ID must be an event id of at most {MAX_EVENT_ID}")
    return int(text)


def task_events(
    app: Services, worker: Worker, task_key: int, after: int, *, turn_id: str | None
) -> AsyncIterator[bytes]:
    """A task's events after `after` (only the turn's, if given), live until the turn or task
    ends, then the final `Worker` object and `[DONE]`."""
    keepalive = app.settings.keepalive_seconds
    events = app.tasks.follow(task_key, after, turn_id=turn_id, idle_timeout=keepalive)
    return framed(app, worker, task_key, turn_id, events)


async def framed(
    app: Services,
    worker: Worker,
    task_key: int,
    turn_id: str | None,
    events: AsyncIterator[Event | None],
) -> AsyncIterator[bytes]:
    """`events` as SSE frames (None: a keep-alive ping), then the final `Worker` object of the
    turn (or task) and `[DONE]`."""
    async for event in events:
        yield PING if event is None else frame(event)
    state = await app.tasks.state_of_task(worker, task_key, turn_id)
    yield worker_frame(app, state)
    yield DONE


def worker_frame(app: Services, state: WorkerState) -> bytes:
    return data_frame({"type": "data-worker", "data": app.wire.worker(state)})
