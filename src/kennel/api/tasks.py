"""Task routes: run a turn (blocking JSON or live stream), read, list and archive tasks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from kennel.api.bodies import read_json
from kennel.api.deps import PrincipalDep, Services, ServicesDep
from kennel.api.openapi import COMMON_ERRORS, STREAM_OR_JSON, errors, task_bodies
from kennel.api.schemas import CreateTaskBody, PageNumber
from kennel.api.sse import framed, sse_response
from kennel.api.streaming import WatchedStream
from kennel.files.uploads import read_multipart
from kennel.models import TaskSnapshot, TaskStatus
from kennel.services.tasks import TaskRequest, WorkerState

router = APIRouter(prefix="/api/tasks", responses=COMMON_ERRORS)

PAGE_SIZE = 50
KEEPALIVE = b" \n"


@router.post(
    "",
    openapi_extra=task_bodies(CreateTaskBody),
    responses={**errors(402, 404, 409, 413, 503), **STREAM_OR_JSON},
)
async def create_task(request: Request, caller: PrincipalDep, app: ServicesDep) -> Response:
    """Store a turn, then answer with its final `Worker` object, or stream it live."""
    async with AsyncExitStack() as stack:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = read_multipart(request, app.settings)
            fields, uploads = await stack.enter_async_context(form)
        else:
            fields, uploads = await read_json(request, app.settings.max_json_bytes), []
        body = CreateTaskBody.model_validate(fields)
        task_request = TaskRequest(
            input=body.input,
            budget=body.budget,
            task_id=body.task_id,
            worker_id=body.worker_id,
            metadata=body.metadata or {},
            uploads=uploads,
            live=body.stream,
        )
        keepalive = app.settings.keepalive_seconds
        if body.stream:
            submitted, events = await app.tasks.stream(caller, task_request, keepalive)
        else:
            submitted, news = await app.tasks.answer(caller, task_request, keepalive)
    headers = {"X-Task-Id": submitted.task.id, "X-Turn-Id": submitted.turn.id}
    if body.stream:
        worker, task_key = submitted.worker, submitted.task.key
        return sse_response(framed(app, worker, task_key, submitted.turn.id, events), headers)
    # Headers leave now that the turn is stored; whitespace keeps the SDK's read timeout from
    # re-sending the request while the turn runs (spec §16.18). JSON parsers skip it.
    return WatchedStream(_blocking(app, news), media_type="application/json", headers=headers)


async def _blocking(app: Services, news: AsyncIterator[WorkerState | None]) -> AsyncIterator[bytes]:
    async for state in news:
        if state is None:
            yield KEEPALIVE
        else:
            yield json.dumps(app.wire.worker(state), ensure_ascii=False).encode()


@router.get("")
async def list_tasks(
    caller: PrincipalDep,
    app: ServicesDep,
    worker_id: Annotated[str | None, Query(alias="workerId", min_length=1)] = None,
    status: TaskStatus | None = None,
    page: PageNumber = 1,
) -> JSONResponse:
    found = await app.tasks.list(
        caller, worker_id=worker_id, status=status, page=page, page_size=PAGE_SIZE
    )
    return JSONResponse(app.wire.page(found, [app.wire.task(task) for task in found.items]))


@router.get("/{task_id}", responses=errors(404))
async def retrieve_task(task_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    return _task_with_turns(app, await app.tasks.task_with_turns(caller, task_id))


@router.post("/{task_id}/cancel", responses=errors(404, 409))
async def cancel_task(task_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    """Extension: stop the task now; answers it as `GET /api/tasks/{taskId}` would, once every
    turn has ended. No body is read."""
    return _task_with_turns(app, await app.tasks.cancel(caller, task_id))


def _task_with_turns(app: Services, snapshot: TaskSnapshot) -> JSONResponse:
    return JSONResponse(
        {
            "task": app.wire.task(snapshot.task),
            "turns": [app.wire.turn(turn, snapshot.task.id) for turn in snapshot.turns],
        }
    )


@router.get("/{task_id}/turns", responses=errors(404))
async def list_turns(task_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    """The TypeScript SDK 0.14 shape (spec §16.20)."""
    snapshot = await app.tasks.task_with_turns(caller, task_id)
    return JSONResponse(
        {
            "items": [app.wire.turn(turn, snapshot.task.id) for turn in snapshot.turns],
            "taskId": snapshot.task.id,
        }
    )


@router.delete("/{task_id}", responses=errors(403, 404))
async def archive_task(task_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    await app.tasks.archive(caller, task_id)
    return JSONResponse({"archived": True})
