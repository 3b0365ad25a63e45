"""Running tasks from the composer, the task page, its live stream and cancelling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from kennel.dashboard.deps import Dashboard, DashboardDep, PostedDep, SessionDep
from kennel.dashboard.render import page
from kennel.dashboard.routing import DashboardRoute
from kennel.dashboard.turns import TurnView, view_of
from kennel.errors import ConflictError, InvalidInputError, NotFoundError
from kennel.models import Budget, Principal, TriggeredBy, Turn
from kennel.services.tasks import TaskRequest, WorkerState

router = APIRouter(route_class=DashboardRoute)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/worker/{worker_id}/tasks")
async def run_task(worker_id: str, posted: PostedDep, app: DashboardDep) -> Response:
    """A new task, or a follow-up turn of `task_id`; the task page then shows it live."""
    text = posted.text("input").strip()
    if not text:
        raise InvalidInputError("write what the worker should do")
    try:
        budget = Budget(posted.text("budget", Budget.STANDARD.value))
    except ValueError:
        raise InvalidInputError("unknown budget") from None
    submitted = await app.tasks.submit(
        posted.principal,
        TaskRequest(
            input=text,
            budget=budget,
            task_id=posted.text("task_id").strip() or None,
            worker_id=worker_id,
            triggered_by=TriggeredBy.UI,
            uploads=posted.uploads,
            live=True,
        ),
    )
    target = f"/worker/{worker_id}/task/{submitted.task.id}#turn-{submitted.turn.id}"
    return RedirectResponse(target, status_code=303)


@router.get("/worker/{worker_id}/task/{task_id}")
async def task_page(
    worker_id: str, task_id: str, request: Request, session: SessionDep, app: DashboardDep
) -> Response:
    state = await app.tasks.state(session.principal, worker_id, task_id=task_id)
    assert state.snapshot is not None  # a task was asked for
    task = state.snapshot.task
    return page(
        request,
        "task.html",
        title=task.title,
        worker=state.worker,
        task=task,
        turns=[_view(app, state, turn) for turn in state.snapshot.turns],
        is_creator=state.worker.user_id == session.principal.user_id,
        budgets=list(Budget),
    )


@router.get("/worker/{worker_id}/task/{task_id}/turns/{turn_id}/events")
async def turn_events(
    worker_id: str,
    task_id: str,
    turn_id: str,
    session: SessionDep,
    app: DashboardDep,
    after: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header(alias="last-event-id")] = None,
) -> Response:
    """The turn's events from the task's log (the API's stream, with the session's access):
    `Last-Event-ID`, which EventSource sends when it reconnects, resumes after that event."""
    state, turn = await _turn(app, session.principal, worker_id, task_id, turn_id)
    assert state.snapshot is not None
    if last_event_id and last_event_id.strip().isdigit():
        after = int(last_event_id.strip())
    return StreamingResponse(
        _events(app, state.snapshot.task.key, turn.id, after),
        media_type="text/event-stream",
        headers=STREAM_HEADERS,
    )


async def _events(app: Dashboard, task_key: int, turn_id: str, after: int) -> AsyncIterator[bytes]:
    keepalive = app.settings.keepalive_seconds
    async for event in app.tasks.follow(task_key, after, turn_id=turn_id, idle_timeout=keepalive):
        yield (
            b": ping\n\n" if event is None else f"id: {event.seq}\ndata: {event.body}\n\n".encode()
        )
    yield b"data: [DONE]\n\n"


@router.post("/worker/{worker_id}/task/{task_id}/cancel")
async def cancel_task(
    worker_id: str, task_id: str, posted: PostedDep, app: DashboardDep
) -> Response:
    """A task that ended meanwhile needs no cancelling: the page then shows how it ended."""
    await app.tasks.state(posted.principal, worker_id, task_id=task_id)
    with suppress(ConflictError):
        await app.tasks.cancel(posted.principal, task_id)
    return RedirectResponse(f"/worker/{worker_id}/task/{task_id}", status_code=303)


async def _turn(
    app: Dashboard, principal: Principal, worker_id: str, task_id: str, turn_id: str
) -> tuple[WorkerState, Turn]:
    state = await app.tasks.state(principal, worker_id, task_id=task_id)
    assert state.snapshot is not None
    turn = next((turn for turn in state.snapshot.turns if turn.id == turn_id), None)
    if turn is None:
        raise NotFoundError(f"turn {turn_id} not found")
    return state, turn


def _view(app: Dashboard, state: WorkerState, turn: Turn) -> TurnView:
    assert state.snapshot is not None
    model_name = state.worker.model or app.settings.model
    return view_of(turn, app.settings, model_name, state.snapshot.event_seq)
