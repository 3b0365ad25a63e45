"""Schedules: when a worker runs on its own (spec §3.6-3.8, §16.13)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kennel import ids
from kennel.models import (
    Budget,
    FiringFacts,
    Schedule,
    ScheduleFiring,
    ScheduleKind,
    ScheduleRun,
    Task,
    TaskStatus,
    Worker,
)
from kennel.storage.database import Database
from kennel.storage.tables import organizations, schedule_runs, schedules, tasks, workers
from kennel.storage.tasks import submit_turn
from kennel.storage.wakeups import SCHEDULES_TOPIC
from kennel.storage.workers import find_worker

Plan = Callable[[Schedule, Worker, FiringFacts], ScheduleFiring]
"""The service's decision on a firing, given the facts of the moment."""
"""Decides a firing inside the transaction that records it (the turn, the next run)."""


class ScheduleStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, schedule: Schedule) -> None:
        def work(conn: sa.Connection) -> None:
            conn.execute(
                schedules.insert().values(
                    id=schedule.id,
                    worker_id=schedule.worker_id,
                    organization_id=schedule.organization_id,
                    input=schedule.input,
                    budget=schedule.budget.value,
                    kind=schedule.kind.value,
                    delay_seconds=schedule.delay_seconds,
                    interval_seconds=schedule.interval_seconds,
                    cron=schedule.cron,
                    timezone=schedule.timezone,
                    run_at=schedule.run_at,
                    next_run_at=schedule.next_run_at,
                    created_by_user_id=schedule.created_by_user_id,
                    created_at=schedule.created_at,
                    cancelled_at=schedule.cancelled_at,
                    last_fired_at=schedule.last_fired_at,
                )
            )
            self._db.publish(conn, SCHEDULES_TOPIC)

        return await self._db.write(work)

    async def list_active(self, worker_id: str) -> list[Schedule]:
        """The worker's schedules that will still fire, oldest first."""

        def work(conn: sa.Connection) -> list[Schedule]:
            rows = conn.execute(
                sa.select(schedules)
                .where(schedules.c.worker_id == worker_id, _active())
                .order_by(schedules.c.created_at, schedules.c.id)
            )
            return [schedule_from_row(row) for row in rows]

        return await self._db.read(work)

    async def cancel(self, worker_id: str, schedule_id: str, now: datetime) -> bool:
        """Stop an active schedule of the worker; False if there is no such active schedule."""

        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule_id, schedules.c.worker_id == worker_id, _active())
                .values(cancelled_at=now)
            )
            self._db.publish(conn, SCHEDULES_TOPIC)
            return result.rowcount > 0

        return await self._db.write(work)

    async def get(self, worker_id: str, schedule_id: str) -> Schedule | None:
        """A schedule of the worker, active or not."""

        def work(conn: sa.Connection) -> Schedule | None:
            row = conn.execute(
                sa.select(schedules).where(
                    schedules.c.id == schedule_id, schedules.c.worker_id == worker_id
                )
            ).first()
            return None if row is None else schedule_from_row(row)

        return await self._db.read(work)

    async def fire_due(self, now: datetime, limit: int, plan: Plan) -> list[ScheduleRun]:
        """Fire up to `limit` schedules that are due, oldest first, each exactly once.

        In one transaction per batch, each due schedule starts its task (or records why it
        skipped) and moves on to its next run, so a firing is never lost nor doubled; on
        PostgreSQL, processes firing at once split the due schedules (SKIP LOCKED).
        """

        def work(conn: sa.Connection) -> list[ScheduleRun]:
            query = (
                sa.select(schedules)
                .join(workers, workers.c.id == schedules.c.worker_id)
                .where(_active(), schedules.c.next_run_at <= now, workers.c.deleted_at.is_(None))
                .order_by(schedules.c.next_run_at, schedules.c.id)
                .limit(limit)
            )
            query = self._db.dialect.claiming(query, of=schedules)
            fired = []
            for row in conn.execute(query).all():
                schedule = schedule_from_row(row)
                firing = plan(schedule, _worker(conn, schedule), _facts(conn, schedule))
                assert schedule.next_run_at is not None  # active
                run = self._fire(conn, schedule, firing, schedule.next_run_at, now, manual=False)
                conn.execute(
                    schedules.update()
                    .where(schedules.c.id == schedule.id)
                    .values(next_run_at=firing.next_run_at, last_fired_at=now)
                )
                fired.append(run)
            return fired

        return await self._db.write(work)

    async def fire_now(
        self, worker_id: str, schedule_id: str, now: datetime, plan: Plan
    ) -> ScheduleRun | None:
        """Fire an active schedule at once, leaving its timing alone (`run-now`); None if there
        is no such active schedule. A skipped firing is returned, not recorded."""

        def work(conn: sa.Connection) -> ScheduleRun | None:
            query = (
                sa.select(schedules)
                .join(workers, workers.c.id == schedules.c.worker_id)
                .where(
                    schedules.c.id == schedule_id,
                    schedules.c.worker_id == worker_id,
                    workers.c.deleted_at.is_(None),
                    _active(),
                )
            )
            query = self._db.dialect.locking(query, of=schedules)
            row = conn.execute(query).first()
            if row is None:
                return None
            schedule = schedule_from_row(row)
            firing = plan(schedule, _worker(conn, schedule), _facts(conn, schedule))
            return self._fire(conn, schedule, firing, now, now, manual=True)

        return await self._db.write(work)

    def _fire(
        self,
        conn: sa.Connection,
        schedule: Schedule,
        firing: ScheduleFiring,
        scheduled_for: datetime,
        now: datetime,
        *,
        manual: bool,
    ) -> ScheduleRun:
        run = ScheduleRun(
            id=ids.new_id("run"),
            schedule_id=schedule.id,
            worker_id=schedule.worker_id,
            task_id=None,
            task_status=None,
            scheduled_for=scheduled_for,
            fired_at=now,
            manual=manual,
            skip_reason=firing.skip_reason,
        )
        task_key = None
        if run.skip_reason is None:
            task = submit_turn(self._db, conn, firing.submission, now, _refuse_existing).task
            task_key = task.key
            run = replace(run, task_id=task.id, task_status=task.status)
        elif manual:
            return run
        conn.execute(
            schedule_runs.insert().values(
                id=run.id,
                schedule_id=run.schedule_id,
                worker_id=run.worker_id,
                task_key=task_key,
                task_id=run.task_id,
                scheduled_for=run.scheduled_for,
                fired_at=run.fired_at,
                manual=run.manual,
                skip_reason=run.skip_reason,
            )
        )
        return run

    async def runs(
        self, schedule_id: str, *, offset: int, limit: int
    ) -> tuple[list[ScheduleRun], int]:
        """The schedule's firings, newest first, with the current status of their tasks."""

        def work(conn: sa.Connection) -> tuple[list[ScheduleRun], int]:
            mine = schedule_runs.c.schedule_id == schedule_id
            total = conn.execute(
                sa.select(sa.func.count()).select_from(schedule_runs).where(mine)
            ).scalar_one()
            rows = conn.execute(
                sa.select(schedule_runs, tasks.c.status.label("task_status"))
                .outerjoin(tasks, tasks.c.key == schedule_runs.c.task_key)
                .where(mine)
                .order_by(schedule_runs.c.fired_at.desc(), schedule_runs.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_run_from_row(row) for row in rows], int(total)

        return await self._db.read(work)

    async def next_due(self) -> datetime | None:
        """When the earliest active schedule of a live worker is due."""

        def work(conn: sa.Connection) -> datetime | None:
            moment: datetime | None = conn.execute(
                sa.select(sa.func.min(schedules.c.next_run_at))
                .join(workers, workers.c.id == schedules.c.worker_id)
                .where(_active(), workers.c.deleted_at.is_(None))
            ).scalar_one()
            return moment

        return await self._db.read(work)


def _facts(conn: sa.Connection, schedule: Schedule) -> FiringFacts:
    last_status = conn.execute(
        sa.select(tasks.c.status)
        .select_from(schedule_runs)
        .join(tasks, tasks.c.key == schedule_runs.c.task_key)
        .where(schedule_runs.c.schedule_id == schedule.id)
        .order_by(schedule_runs.c.fired_at.desc(), schedule_runs.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    balance = conn.execute(
        sa.select(organizations.c.credit_balance).where(
            organizations.c.id == schedule.organization_id
        )
    ).scalar_one_or_none()
    return FiringFacts(None if last_status is None else TaskStatus(last_status), balance)


def _worker(conn: sa.Connection, schedule: Schedule) -> Worker:
    worker = find_worker(conn, schedule.organization_id, schedule.worker_id)
    assert worker is not None  # the firing queries join live workers only
    return worker


def _refuse_existing(task: Task) -> None:
    # Every firing has a fresh task id: an existing task means two firings collided.
    raise AssertionError(f"schedule firing reused task {task.id}")


def _run_from_row(row: Any) -> ScheduleRun:
    return ScheduleRun(
        id=row.id,
        schedule_id=row.schedule_id,
        worker_id=row.worker_id,
        task_id=row.task_id,
        task_status=None if row.task_status is None else TaskStatus(row.task_status),
        scheduled_for=row.scheduled_for,
        fired_at=row.fired_at,
        manual=row.manual,
        skip_reason=row.skip_reason,
    )


def _active() -> sa.ColumnElement[bool]:
    return sa.and_(schedules.c.cancelled_at.is_(None), schedules.c.next_run_at.is_not(None))


def schedule_from_row(row: Any) -> Schedule:
    return Schedule(
        id=row.id,
        worker_id=row.worker_id,
        organization_id=row.organization_id,
        input=row.input,
        budget=Budget(row.budget),
        kind=ScheduleKind(row.kind),
        delay_seconds=row.delay_seconds,
        interval_seconds=row.interval_seconds,
        cron=row.cron,
        timezone=row.timezone,
        run_at=row.run_at,
        next_run_at=row.next_run_at,
        created_by_user_id=row.created_by_user_id,
        created_at=row.created_at,
        cancelled_at=row.cancelled_at,
        last_fired_at=row.last_fired_at,
    )
