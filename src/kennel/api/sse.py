"""Server-sent events in the AI SDK UI-message-stream format (spec §6.2, §16.3, §16.19)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from kennel.api.deps import Services
from kennel.models import Event, Worker
from kennel.services.tasks import WorkerState

HEADERS = {
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}
PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"


def frame(event: Event) -> bytes:
    return f"id: {event.seq}\ndata: {event.body}\n\n".encode()


def data_frame(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def sse_response(
    body: AsyncIterator[bytes], headers: dict[str, str] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={**HEADERS, **(headers or {})}
    )


def resume_point(last_event_id: str | None, starting_after: int | None) -> int:
    """Where a reader resumes: after `Last-Event-ID` (header) or `?startingAfter=`, else 0."""
    if starting_after is not None:
        return max(0, starting_after)
    if last_event_id and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return 0


async def task_events(
    app: Services, worker: Worker, task_key: int, after: int, *, turn_id: str | None
) -> AsyncIterator[bytes]:
    """A task's events after `after` (only the turn's, if given), live until the turn or task
    ends, then the final `Worker` object and `[DONE]`."""
    keepalive = app.settings.keepalive_seconds
    async for event in app.tasks.follow(task_key, after, turn_id=turn_id, idle_timeout=keepalive):
        yield PING if event is None else frame(event)
    state = await app.tasks.state_of_task(worker, task_key, turn_id)
    yield worker_frame(app, state)
    yield DONE


def worker_frame(app: Services, state: WorkerState) -> bytes:
    return data_frame({"type": "data-worker", "data": app.wire.worker(state)})
