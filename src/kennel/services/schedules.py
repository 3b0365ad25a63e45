"""Schedules: when a worker runs on its own, checked and timed here (spec §3.6, §16.13)."""

from __future__ import annotations

import builtins
import functools
import logging
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo

from kennel import ids
from kennel.clock import Clock, seconds_until
from kennel.config import Settings
from kennel.errors import ConflictError, InvalidInputError, NotFoundError
from kennel.models import (
    Budget,
    FiringFacts,
    Page,
    Principal,
    Schedule,
    ScheduleFiring,
    ScheduleKind,
    ScheduleRun,
    Submission,
    TriggeredBy,
    Worker,
)
from kennel.services.billing import NO_CREDITS, has_credits
from kennel.services.tasks import provisional_title
from kennel.services.workers import WorkerService
from kennel.storage import Store

logger = logging.getLogger(__name__)

MAX_SECONDS = 31_536_000
"""Upper bound of `delayInSeconds` and `intervalSeconds`: one year (spec §13)."""
CRON_FIELDS = 5
FIRE_BATCH = 100
"""Schedules fired per transaction; a backlog is worked off in batches."""
STILL_RUNNING = "the previous run is still going"


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """A new schedule as the caller described it; only the field of its `kind` is read."""

    input: str
    kind: ScheduleKind
    budget: Budget = Budget.STANDARD
    date: str | None = None
    delay_seconds: int | None = None
    interval_seconds: int | None = None
    cron: str | None = None
    timezone: str | None = None


class ScheduleService:
    def __init__(
        self, store: Store, workers: WorkerService, clock: Clock, settings: Settings
    ) -> None:
        self._store = store
        self._workers = workers
        self._clock = clock
        self._settings = settings

    async def create(
        self, principal: Principal, worker_id: str, request: ScheduleRequest
    ) -> Schedule:
        """Schedule the worker. Anyone who may run tasks on it (sees it) may schedule it."""
        worker = await self._workers.visible(principal, worker_id)
        if not request.input:
            raise InvalidInputError("input must not be empty")
        zone = zone_named(request.timezone) if request.timezone is not None else UTC
        now = self._clock.now()
        schedule = Schedule(
            id=ids.new_id("sch"),
            worker_id=worker.id,
            organization_id=worker.organization_id,
            input=request.input,
            budget=request.budget,
            kind=request.kind,
            delay_seconds=None,
            interval_seconds=None,
            cron=None,
            timezone=request.timezone,
            run_at=None,
            next_run_at=None,
            created_by_user_id=principal.user_id,
            created_at=now,
        )
        schedule = _timed(schedule, request, zone, now)
        await self._store.schedules.create(schedule)
        return schedule

    async def list(self, principal: Principal, worker_id: str) -> list[Schedule]:
        """The worker's schedules that will still fire, oldest first."""
        worker = await self._workers.visible(principal, worker_id)
        return await self._store.schedules.list_active(worker.id)

    async def cancel(self, principal: Principal, worker_id: str, schedule_id: str) -> None:
        """Stop a schedule; like creating one, open to anyone who sees the worker."""
        worker = await self._workers.visible(principal, worker_id)
        if not await self._store.schedules.cancel(worker.id, schedule_id, self._clock.now()):
            raise NotFoundError(f"schedule {schedule_id} not found")

    async def tick(self) -> float | None:
        """Fire what is due; returns the seconds until the next schedule is (None: none is)."""
        for run in await self.fire_due():
            if run.skip_reason is None:
                logger.info("schedule %s started task %s", run.schedule_id, run.task_id)
            else:
                logger.info("schedule %s skipped a run: %s", run.schedule_id, run.skip_reason)
        return await self.seconds_until_due()

    async def fire_due(self) -> builtins.list[ScheduleRun]:
        """Fire every schedule that is due now: each starts a task with `triggeredBy:
        "schedule"`, or records why it skipped (its last task is still going: a schedule never
        overlaps itself). A firing missed while the server was down runs once, not once per
        missed time; recurring schedules then move on to their next time after now."""
        fired: builtins.list[ScheduleRun] = []
        while True:
            now = self._clock.now()
            batch = await self._store.schedules.fire_due(now, FIRE_BATCH, self._plan(now))
            fired += batch
            if len(batch) < FIRE_BATCH:
                return fired

    async def run_now(self, principal: Principal, worker_id: str, schedule_id: str) -> ScheduleRun:
        """Fire a schedule at once, outside its timing; 409 while its last task is going."""
        worker = await self._workers.visible(principal, worker_id)
        now = self._clock.now()
        run = await self._store.schedules.fire_now(worker.id, schedule_id, now, self._plan(now))
        if run is None:
            raise NotFoundError(f"schedule {schedule_id} not found")
        if run.skip_reason is not None:
            raise ConflictError(f"schedule {schedule_id} can't run now: {run.skip_reason}")
        return run

    async def runs(
        self, principal: Principal, worker_id: str, schedule_id: str, page: int, page_size: int
    ) -> Page[ScheduleRun]:
        """The schedule's firing history (also of a cancelled or finished one), newest first."""
        if page < 1:
            raise InvalidInputError("page must be 1 or more")
        worker = await self._workers.visible(principal, worker_id)
        if await self._store.schedules.get(worker.id, schedule_id) is None:
            raise NotFoundError(f"schedule {schedule_id} not found")
        items, total = await self._store.schedules.runs(
            schedule_id, offset=(page - 1) * page_size, limit=page_size
        )
        return Page.of(items, page=page, page_size=page_size, total=total)

    async def seconds_until_due(self) -> float | None:
        """How long until the next schedule is due (0 if one is overdue); None if none is."""
        return seconds_until(await self._store.schedules.next_due(), self._clock.now())

    def _plan(self, now: datetime) -> Callable[[Schedule, Worker, FiringFacts], ScheduleFiring]:
        def plan(schedule: Schedule, worker: Worker, facts: FiringFacts) -> ScheduleFiring:
            submission = Submission(
                organization_id=schedule.organization_id,
                task_id=ids.task_id(),
                worker=worker,
                input=schedule.input,
                budget=schedule.budget,
                triggered_by=TriggeredBy.SCHEDULE,
                created_by_user_id=schedule.created_by_user_id,
                provisional_title=provisional_title(schedule.input),
                metadata={"scheduleId": schedule.id},
                turn_id=ids.turn_id(),
                max_attempts=self._settings.job_max_attempts,
            )
            return ScheduleFiring(submission, next_run_after(schedule, now), skip_reason(facts))

        return plan


def skip_reason(facts: FiringFacts) -> str | None:
    """Why a schedule can't start a task now: its last task is still going (a schedule never
    overlaps itself), or its organization has run out of credits."""
    status = facts.last_task_status
    if status is not None and not status.is_terminal:
        return STILL_RUNNING
    if not has_credits(facts.credit_balance):
        return NO_CREDITS
    return None


def _timed(schedule: Schedule, request: ScheduleRequest, zone: tzinfo, now: datetime) -> Schedule:
    """The schedule with its kind's field checked and its first run worked out."""
    match request.kind:
        case ScheduleKind.SCHEDULED:
            run_at = parse_date(_given(request.date, "date"), zone)
            if run_at < now:
                raise InvalidInputError("when.date is in the past")
            return replace(schedule, run_at=run_at, next_run_at=run_at)
        case ScheduleKind.DELAYED:
            delay = _seconds(request.delay_seconds, "delayInSeconds")
            run_at = now + timedelta(seconds=delay)
            return replace(schedule, delay_seconds=delay, run_at=run_at, next_run_at=run_at)
        case ScheduleKind.INTERVAL:
            interval = _seconds(request.interval_seconds, "intervalSeconds")
            timed = replace(schedule, interval_seconds=interval)
        case ScheduleKind.CRON:
            expression = check_cron(_given(request.cron, "cron"))
            timed = replace(schedule, cron=expression)
    return replace(timed, next_run_at=next_run_after(timed, now))


def next_run_after(schedule: Schedule, moment: datetime) -> datetime | None:
    """When a schedule fires next after `moment`; None for a one-shot (it fires only once).

    An interval keeps its rhythm: the next run is the first of `next_run_at + k * interval`
    after `moment`, so firing a little late does not make every later run late too.
    """
    if schedule.kind is ScheduleKind.INTERVAL and schedule.interval_seconds is not None:
        interval = timedelta(seconds=schedule.interval_seconds)
        anchor = schedule.next_run_at
        if anchor is None:  # a new schedule
            return moment + interval
        if anchor > moment:  # not due yet
            return anchor
        return anchor + interval * ((moment - anchor) // interval + 1)
    if schedule.kind is ScheduleKind.CRON and schedule.cron is not None:
        zone = zone_named(schedule.timezone) if schedule.timezone is not None else UTC
        return next_cron_run(schedule.cron, zone, moment)
    return None


def next_cron_run(expression: str, zone: tzinfo, after: datetime) -> datetime:
    """The first instant strictly after `after` that matches `expression` read as wall-clock
    time in `zone`, in UTC. Across DST changes the wall-clock time holds (`0 9 * * *` in
    Europe/Madrid is 08:00Z in winter, 07:00Z in summer) and, as in Vixie cron, a time skipped
    by the spring change runs at the end of the gap, and a job at fixed hours runs once, not
    twice, in the hour the autumn change repeats."""
    from croniter import CroniterError, croniter  # only cron schedules need it (see `check_cron`)

    try:
        runs = croniter(expression, after.astimezone(zone))
        moment = runs.get_next(datetime)
        if _is_repeated(moment) and croniter.expand(expression)[0][1] != ["*"]:
            moment = runs.get_next(datetime)
    except CroniterError:
        raise InvalidInputError(f"when.cron {expression!r} never fires") from None
    return moment.astimezone(UTC)


def _is_repeated(moment: datetime) -> bool:
    """Whether a wall-clock time is the second of two with that reading (autumn DST change)."""
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


def check_cron(expression: str) -> str:
    """A 5-field cron expression (croniter dialect) or a nickname such as `@daily`.

    croniter is imported by the first cron schedule (a server without one never loads it).
    """
    from croniter import croniter

    expression = " ".join(expression.split())
    if not expression:
        raise InvalidInputError("when.cron must not be empty")
    if not expression.startswith("@") and len(expression.split(" ")) != CRON_FIELDS:
        raise InvalidInputError(
            "when.cron must have 5 fields (minute hour day-of-month month day-of-week) "
            "or be a nickname such as @daily"
        )
    if not croniter.is_valid(expression):
        raise InvalidInputError(f"when.cron {expression!r} is not a valid cron expression")
    return expression


def parse_date(text: str, zone: tzinfo) -> datetime:
    """An ISO-8601 date-time in UTC; without an offset it is read in `zone`."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"when.date {text!r} is not an ISO-8601 date-time (e.g. 2030-01-02T03:04:05Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def zone_named(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone of that name (`Europe/Madrid`, `UTC`)."""
    if name not in _zone_names():
        raise InvalidInputError(
            f"timezone {name!r} is not an IANA time zone name such as Europe/Madrid"
        )
    return zoneinfo.ZoneInfo(name)


@functools.cache
def _zone_names() -> frozenset[str]:
    # Read once: the system's zone files, or the `tzdata` package where there are none.
    return frozenset(zoneinfo.available_timezones())


def _given(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise InvalidInputError(f"when.{name} is required for this type of schedule")
    return value


def _seconds(value: int | None, name: str) -> int:
    if value is None:
        raise InvalidInputError(f"when.{name} is required for this type of schedule")
    if isinstance(value, bool) or not 1 <= value <= MAX_SECONDS:
        raise InvalidInputError(f"when.{name} must be an integer from 1 to {MAX_SECONDS}")
    return value
