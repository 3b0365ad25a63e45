"""The workers page: the organization's workers, searchable; creating, editing, deleting."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import escape

from kennel.dashboard.deps import DashboardDep, PostedDep, SessionDep
from kennel.dashboard.forms import WorkerForm, parse_schema
from kennel.dashboard.render import page
from kennel.dashboard.routing import DashboardRoute
from kennel.errors import InvalidInputError
from kennel.models import Worker

router = APIRouter(route_class=DashboardRoute)

PAGE_SIZE = 25
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]


@router.get("/")
async def workers_page(
    request: Request,
    session: SessionDep,
    app: DashboardDep,
    q: Annotated[str, Query(max_length=200)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> Response:
    found = await app.workers.overview(session.principal, q, page_number, PAGE_SIZE)
    return page(request, "workers.html", title="Workers", found=found, q=q)


@router.get("/workers/new")
async def new_worker_form(request: Request, session: SessionDep) -> Response:
    return page(request, "worker_form.html", title="New worker", form=WorkerForm(), worker=None)


@router.post("/workers/new")
async def create_worker(request: Request, posted: PostedDep, app: DashboardDep) -> Response:
    form = WorkerForm.read(posted)
    try:
        worker = await app.workers.create(posted.principal, form.draft())
    except InvalidInputError as error:
        return _refused(request, form, None, error.message)
    return RedirectResponse(f"/worker/{worker.id}", status_code=303)


@router.get("/worker/{worker_id}/edit")
async def edit_worker_form(
    worker_id: str, request: Request, session: SessionDep, app: DashboardDep
) -> Response:
    worker = await app.workers.owned(session.principal, worker_id)
    return page(
        request,
        "worker_form.html",
        title=f"Edit {worker.title}",
        form=_filled(worker),
        worker=worker,
    )


@router.post("/worker/{worker_id}/edit")
async def edit_worker(
    worker_id: str, request: Request, posted: PostedDep, app: DashboardDep
) -> Response:
    worker = await app.workers.owned(posted.principal, worker_id)
    form = WorkerForm.read(posted)
    try:
        await app.workers.update(posted.principal, worker_id, form.changes())
    except InvalidInputError as error:
        return _refused(request, form, worker, error.message)
    return RedirectResponse(f"/worker/{worker_id}", status_code=303)


@router.post("/worker/{worker_id}/delete")
async def delete_worker(worker_id: str, posted: PostedDep, app: DashboardDep) -> Response:
    await app.workers.delete(posted.principal, worker_id)
    return RedirectResponse("/", status_code=303)


@router.post("/workers/check-schema")
async def check_schema(posted: PostedDep) -> Response:
    """Validation as the user types (htmx): the same rule the worker's save applies."""
    try:
        schema = parse_schema(posted.text("output_schema"))
    except InvalidInputError as error:
        return HTMLResponse(f'<span class="bad">{escape(error.message)}</span>')
    if schema is None:
        return HTMLResponse('<span class="muted">No schema: answers are free-form text.</span>')
    return HTMLResponse('<span class="good">Valid JSON Schema for an object.</span>')


def _filled(worker: Worker) -> WorkerForm:
    schema = "" if worker.output_schema is None else json.dumps(worker.output_schema, indent=2)
    return WorkerForm(
        title=worker.title,
        summary=worker.summary,
        instructions=worker.instructions,
        output_schema=schema,
        visibility=worker.visibility.value,
        model=worker.model or "",
    )


def _refused(request: Request, form: WorkerForm, worker: Worker | None, message: str) -> Response:
    title = "New worker" if worker is None else f"Edit {worker.title}"
    return page(
        request, "worker_form.html", 400, title=title, form=form, worker=worker, message=message
    )
