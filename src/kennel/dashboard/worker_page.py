"""The worker page: the composer, then the worker's tasks, files, schedules, webhook and
e-mail. Each section is one query (or one page of one), whatever the number of tasks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from kennel.dashboard.deps import DashboardDep, SessionDep
from kennel.dashboard.render import page
from kennel.dashboard.routing import DashboardRoute
from kennel.models import Budget, ScheduleKind, TaskStatus, TriggeredBy

router = APIRouter(route_class=DashboardRoute)

TASKS_PER_PAGE = 20
FILES_PER_PAGE = 50
DELIVERIES_PER_PAGE = 10
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]


@router.get("/worker/{worker_id}")
async def worker_page(
    worker_id: str,
    request: Request,
    session: SessionDep,
    app: DashboardDep,
    status: TaskStatus | None = None,
    triggered_by: Annotated[TriggeredBy | None, Query(alias="by")] = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
    files_page: Annotated[int, Query(alias="files", ge=1, le=1_000_000)] = 1,
    deliveries_page: Annotated[int, Query(alias="deliveries", ge=1, le=1_000_000)] = 1,
) -> Response:
    principal = session.principal
    worker = await app.workers.visible(principal, worker_id)
    is_creator = worker.user_id == principal.user_id
    tasks = await app.tasks.list(
        principal,
        worker_id=worker.id,
        status=status,
        triggered_by=triggered_by,
        page=page_number,
        page_size=TASKS_PER_PAGE,
    )
    files = await app.workers.files(principal, worker.id, files_page, FILES_PER_PAGE)
    schedules = await app.schedules.list(principal, worker.id)
    webhook = deliveries = None
    if is_creator:
        webhook = await app.webhooks.get(principal, worker.id)
        deliveries = await app.webhooks.executions(
            principal, worker.id, deliveries_page, DELIVERIES_PER_PAGE
        )
    return page(
        request,
        "worker.html",
        title=worker.title,
        worker=worker,
        task=None,
        is_creator=is_creator,
        tasks=tasks,
        status_filter=status.value if status else "",
        by_filter=triggered_by.value if triggered_by else "",
        statuses=list(TaskStatus),
        triggers=list(TriggeredBy),
        files=files,
        schedules=schedules,
        schedule_kinds=list(ScheduleKind),
        webhook=webhook,
        deliveries=deliveries,
        email=await app.workers.email_address(principal, worker.id),
        budgets=list(Budget),
        shown_token=None,
    )
