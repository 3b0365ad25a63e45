"""Worker routes: templates, state (JSON or live stream), e-mail address, workspace files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from kennel.api.bodies import read_json
from kennel.api.deps import PrincipalDep, Services, ServicesDep, principal
from kennel.api.openapi import COMMON_ERRORS, FILE_BYTES, STREAM_OR_JSON, errors, json_body
from kennel.api.schemas import CreateWorkerBody, PageNumber, UpdateWorkerBody
from kennel.api.sse import (
    DONE,
    MAX_EVENT_ID,
    resume_point,
    sse_response,
    task_events,
    worker_frame,
)
from kennel.errors import NotFoundError
from kennel.services.sessions import COOKIE_NAME
from kennel.services.tasks import WorkerState
from kennel.services.workers import WorkerDraft

router = APIRouter(prefix="/api/workers", responses=COMMON_ERRORS)

PAGE_SIZE = 50


@router.post("", openapi_extra=json_body(CreateWorkerBody), responses=errors(413))
async def create_worker(request: Request, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    body = CreateWorkerBody.model_validate(await read_json(request, app.settings.max_json_bytes))
    draft = WorkerDraft(
        instructions=body.instructions,
        output_schema=body.output_schema,
        prompt=body.prompt,
        summary=body.summary,
        title=body.title,
        visibility=body.visibility,
        model=body.model,
        email_allow_list=tuple(body.email_allow_list),
    )
    worker = await app.workers.create(caller, draft)
    return JSONResponse(app.wire.template(worker))


@router.get("")
async def list_workers(
    caller: PrincipalDep, app: ServicesDep, page: PageNumber = 1
) -> JSONResponse:
    found = await app.workers.list(caller, page, PAGE_SIZE)
    return JSONResponse(app.wire.page(found, [app.wire.template(w) for w in found.items]))


@router.get("/{worker_id}", responses={**errors(404), **STREAM_OR_JSON})
async def retrieve_worker(
    worker_id: str,
    caller: PrincipalDep,
    app: ServicesDep,
    stream: Annotated[str | None, Query()] = None,
    task_id: Annotated[str | None, Query(alias="taskId", min_length=1)] = None,
    starting_after: Annotated[
        int | None, Query(alias="startingAfter", ge=0, le=MAX_EVENT_ID)
    ] = None,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="last-event-id")] = None,
) -> Response:
    """The worker's latest (or given) task as a `Worker` object, or its event stream."""
    state = await app.tasks.state(caller, worker_id, task_id=task_id)
    wants_stream = (stream or "").lower() == "true" or "text/event-stream" in (accept or "")
    if not wants_stream:
        return JSONResponse(app.wire.worker(state))
    after = resume_point(last_event_id, starting_after)
    return sse_response(_replay(app, state, after))


async def _replay(app: Services, state: WorkerState, after: int) -> AsyncIterator[bytes]:
    """Every stored event of the task, then live ones until it ends, then its final state."""
    if state.snapshot is None:
        yield worker_frame(app, state)
        yield DONE
        return
    async for frame in task_events(app, state.worker, state.snapshot.task.key, after, turn_id=None):
        yield frame


@router.patch(
    "/{worker_id}", openapi_extra=json_body(UpdateWorkerBody), responses=errors(403, 404, 413)
)
async def update_worker(
    worker_id: str, request: Request, caller: PrincipalDep, app: ServicesDep
) -> JSONResponse:
    body = UpdateWorkerBody.model_validate(await read_json(request, app.settings.max_json_bytes))
    worker = await app.workers.update(caller, worker_id, body.changes())
    return JSONResponse(app.wire.template(worker))


@router.delete("/{worker_id}", responses=errors(403, 404))
async def delete_worker(worker_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    await app.workers.delete(caller, worker_id)
    return JSONResponse({"deleted": True})


@router.get("/{worker_id}/email", responses=errors(404))
async def worker_email(worker_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    return JSONResponse({"email": await app.workers.email_address(caller, worker_id)})


@router.get("/{worker_id}/files/{path:path}", responses={**errors(404), **FILE_BYTES})
async def worker_file(worker_id: str, path: str, request: Request, app: ServicesDep) -> Response:
    """A workspace file, byte for byte (spec §16.15). Without a key, a browser signed in to the
    dashboard gets it as an attachment, and one signed out is sent to sign in first: the link
    then works from an e-mail or a chat. It never renders in Kennel's origin (`nosniff`, and a
    sandbox policy for anything that would)."""
    cookie = request.cookies.get(COOKIE_NAME)
    by_session = "authorization" not in request.headers and cookie is not None
    if by_session:
        caller = (await app.sessions.session(cookie)).principal
    elif "authorization" not in request.headers and "text/html" in request.headers.get(
        "accept", ""
    ):
        return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)
    else:
        caller = await principal(request)
    found = await app.workers.file(caller, worker_id, path)
    if not found.location.is_file():
        raise NotFoundError(f"file {path} not found")
    return FileResponse(
        found.location,
        media_type=found.file.media_type,
        filename=found.location.name,
        content_disposition_type="attachment" if by_session else "inline",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )
