"""Schedules of a worker: add one of the four kinds, delete, run now, see its runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from kennel.dashboard.deps import DashboardDep, Posted, PostedDep, SessionDep
from kennel.dashboard.render import page
from kennel.dashboard.routing import DashboardRoute
from kennel.errors import InvalidInputError, NotFoundError
from kennel.models import Budget, ScheduleKind
from kennel.services.schedules import ScheduleRequest

router = APIRouter(route_class=DashboardRoute)

RUNS_PER_PAGE = 25


def schedule_request(posted: Posted) -> ScheduleRequest:
    """The form's fields as the service's request: only the field of the chosen kind counts."""
    try:
        kind = ScheduleKind(posted.text("kind"))
        budget = Budget(posted.text("budget", Budget.STANDARD.value))
    except ValueError:
        raise InvalidInputError("choose when the schedule runs, and a budget") from None
    seconds = None
    if kind in (ScheduleKind.DELAYED, ScheduleKind.INTERVAL):
        text = posted.text("seconds").strip()
        if not text.isdigit():
            raise InvalidInputError("give the number of seconds")
        seconds = int(text)
    return ScheduleRequest(
        input=posted.text("input").strip(),
        kind=kind,
        budget=budget,
        date=posted.text("date").strip() or None if kind is ScheduleKind.SCHEDULED else None,
        delay_seconds=seconds if kind is ScheduleKind.DELAYED else None,
        interval_seconds=seconds if kind is ScheduleKind.INTERVAL else None,
        cron=posted.text("cron").strip() or None if kind is ScheduleKind.CRON else None,
        timezone=posted.text("timezone").strip() or None,
    )


@router.post("/worker/{worker_id}/schedules")
async def create_schedule(worker_id: str, posted: PostedDep, app: DashboardDep) -> Response:
    await app.schedules.create(posted.principal, worker_id, schedule_request(posted))
    return RedirectResponse(f"/worker/{worker_id}#schedules", status_code=303)


@router.post("/worker/{worker_id}/schedules/{schedule_id}/delete")
async def delete_schedule(
    worker_id: str, schedule_id: str, posted: PostedDep, app: DashboardDep
) -> Response:
    await app.schedules.cancel(posted.principal, worker_id, schedule_id)
    return RedirectResponse(f"/worker/{worker_id}#schedules", status_code=303)


@router.post("/worker/{worker_id}/schedules/{schedule_id}/run")
async def run_schedule_now(
    worker_id: str, schedule_id: str, posted: PostedDep, app: DashboardDep
) -> Response:
    run = await app.schedules.run_now(posted.principal, worker_id, schedule_id)
    if run.task_id is None:
        return RedirectResponse(f"/worker/{worker_id}/schedules/{schedule_id}", status_code=303)
    return RedirectResponse(f"/worker/{worker_id}/task/{run.task_id}", status_code=303)


@router.get("/worker/{worker_id}/schedules/{schedule_id}")
async def schedule_history(
    worker_id: str,
    schedule_id: str,
    request: Request,
    session: SessionDep,
    app: DashboardDep,
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> Response:
    worker = await app.workers.visible(session.principal, worker_id)
    runs = await app.schedules.runs(
        session.principal, worker_id, schedule_id, page_number, RUNS_PER_PAGE
    )
    schedule = next(
        (s for s in await app.schedules.list(session.principal, worker_id) if s.id == schedule_id),
        None,
    )
    if schedule is None and not runs.items:
        raise NotFoundError(f"schedule {schedule_id} not found")
    return page(
        request,
        "schedule.html",
        title="Schedule runs",
        worker=worker,
        schedule=schedule,
        schedule_id=schedule_id,
        runs=runs,
    )
