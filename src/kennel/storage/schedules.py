"""Schedules: when a worker runs on its own (spec §3.6-3.8, §16.13)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kennel.models import Budget, Schedule, ScheduleKind
from kennel.storage.database import Database
from kennel.storage.tables import schedules


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
            return result.rowcount > 0

        return await self._db.write(work)


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
