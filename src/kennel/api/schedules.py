"""Schedule routes (spec §3.6-3.8): create, list and cancel a worker's schedules; extensions:
a schedule's firing history and `run-now`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from kennel.api.bodies import read_json
from kennel.api.deps import PrincipalDep, ServicesDep
from kennel.api.openapi import COMMON_ERRORS, errors, json_body
from kennel.api.schemas import PageNumber
from kennel.clock import iso
from kennel.errors import InvalidInputError
from kennel.models import Budget, Schedule, ScheduleKind, ScheduleRun
from kennel.services.schedules import ScheduleRequest

router = APIRouter(prefix="/api/workers/{worker_id}/schedules", responses=COMMON_ERRORS)

JSON = dict[str, Any]
PAGE_SIZE = 50
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64)]


class _Body(BaseModel):
    # Unknown keys are ignored: newer clients may send fields this server does not know yet.
    model_config = ConfigDict(extra="ignore", populate_by_name=False, frozen=True)


class _When(_Body):
    timezone: TimeZoneName | None = None
    """Extension (spec §16.13, §16.20): the IANA zone cron times (and naive dates) are read in."""


class ScheduledWhen(_When):
    type: Literal["scheduled"]
    date: str = Field(min_length=1)


class DelayedWhen(_When):
    type: Literal["delayed"]
    delay_in_seconds: int = Field(alias="delayInSeconds", strict=True)


class CronWhen(_When):
    type: Literal["cron"]
    cron: str = Field(min_length=1, max_length=200)


class IntervalWhen(_When):
    type: Literal["interval"]
    interval_seconds: int = Field(alias="intervalSeconds", strict=True)


When = Annotated[ScheduledWhen | DelayedWhen | CronWhen | IntervalWhen, Field(discriminator="type")]


class CreateScheduleBody(_Body):
    """`timezone` may sit inside `when` (where the TypeScript SDK 0.14 reads it back) or at the
    top level; given in both places it must name the same zone."""

    input: str = Field(min_length=1)
    when: When
    budget: Budget = Budget.STANDARD
    timezone: TimeZoneName | None = None

    def request(self) -> ScheduleRequest:
        when = self.when
        if self.timezone and when.timezone and self.timezone != when.timezone:
            raise InvalidInputError("timezone and when.timezone name different zones")
        return ScheduleRequest(
            input=self.input,
            kind=ScheduleKind(when.type),
            budget=self.budget,
            date=when.date if isinstance(when, ScheduledWhen) else None,
            delay_seconds=when.delay_in_seconds if isinstance(when, DelayedWhen) else None,
            interval_seconds=when.interval_seconds if isinstance(when, IntervalWhen) else None,
            cron=when.cron if isinstance(when, CronWhen) else None,
            timezone=when.timezone or self.timezone,
        )


def schedule_wire(schedule: Schedule) -> JSON:
    """A `WorkerSchedule` (spec §4.6); a `scheduled` one does not echo its date."""
    body: JSON = {
        "id": schedule.id,
        "type": schedule.kind.value,
        "input": schedule.input,
        "budget": schedule.budget.value,
        "nextRunAt": iso(schedule.next_run_at) if schedule.next_run_at else None,
    }
    if schedule.kind is ScheduleKind.DELAYED:
        body["delayInSeconds"] = schedule.delay_seconds
    elif schedule.kind is ScheduleKind.CRON:
        body["cron"] = schedule.cron
    elif schedule.kind is ScheduleKind.INTERVAL:
        body["intervalSeconds"] = schedule.interval_seconds
    if schedule.timezone is not None:
        body["timezone"] = schedule.timezone
    return body


def run_wire(run: ScheduleRun) -> JSON:
    """One firing: `status` is its task's current status, or `skipped` (see `skipReason`)."""
    return {
        "id": run.id,
        "scheduleId": run.schedule_id,
        "workerId": run.worker_id,
        "taskId": run.task_id,
        "status": "skipped" if run.task_status is None else run.task_status.value,
        "scheduledFor": iso(run.scheduled_for),
        "firedAt": iso(run.fired_at),
        "manual": run.manual,
        "skipReason": run.skip_reason,
    }


@router.post(
    "",
    openapi_extra=json_body(CreateScheduleBody, required=True),
    responses=errors(404, 413),
)
async def create_schedule(
    worker_id: str, request: Request, caller: PrincipalDep, app: ServicesDep
) -> JSONResponse:
    body = CreateScheduleBody.model_validate(await read_json(request, app.settings.max_json_bytes))
    schedule = await app.schedules.create(caller, worker_id, body.request())
    return JSONResponse(schedule_wire(schedule))


@router.get("", responses=errors(404))
async def list_schedules(worker_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    found = await app.schedules.list(caller, worker_id)
    return JSONResponse({"schedules": [schedule_wire(s) for s in found], "workerId": worker_id})


@router.delete("/{schedule_id}", responses=errors(404))
async def cancel_schedule(
    worker_id: str, schedule_id: str, caller: PrincipalDep, app: ServicesDep
) -> JSONResponse:
    """No body is read: the SDK sends `Content-Type: application/json` with none (spec §1.3)."""
    await app.schedules.cancel(caller, worker_id, schedule_id)
    return JSONResponse({"cancelled": True})


@router.get("/{schedule_id}/runs", responses=errors(404))
async def schedule_runs(
    worker_id: str,
    schedule_id: str,
    caller: PrincipalDep,
    app: ServicesDep,
    page: PageNumber = 1,
) -> JSONResponse:
    """Extension: the schedule's firings, newest first, 50 a page (§16.7 listing shape)."""
    found = await app.schedules.runs(caller, worker_id, schedule_id, page, PAGE_SIZE)
    return JSONResponse(app.wire.page(found, [run_wire(run) for run in found.items]))


@router.post("/{schedule_id}/run-now", responses=errors(404, 409))
async def run_schedule_now(
    worker_id: str, schedule_id: str, caller: PrincipalDep, app: ServicesDep
) -> JSONResponse:
    """Extension: fire the schedule at once (its timing is unchanged); no body is read.
    Answers the new run; 409 while the schedule's last task is still going."""
    run = await app.schedules.run_now(caller, worker_id, schedule_id)
    return JSONResponse(run_wire(run))
