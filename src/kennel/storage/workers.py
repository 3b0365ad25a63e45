"""Workers (templates): create, read, partial update, soft delete, list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kennel.models import Visibility, Worker, WorkerOverview
from kennel.storage.database import Database
from kennel.storage.statements import Prebuilt
from kennel.storage.tables import schedules, tasks, workers
from kennel.storage.wakeups import SCHEDULES_TOPIC

_UPDATABLE = frozenset(
    {"title", "instructions", "summary", "output_schema", "visibility", "model", "email_allow_list"}
)


class WorkerStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, worker: Worker) -> None:
        await self._db.write(lambda conn: insert_worker(conn, worker))

    async def get(self, organization_id: str, worker_id: str) -> Worker | None:
        """A live (not deleted) worker of the organization, or None."""
        return await self._db.read(lambda conn: find_worker(conn, organization_id, worker_id))

    async def update(
        self, organization_id: str, worker_id: str, changes: dict[str, Any], now: datetime
    ) -> Worker | None:
        """Apply only the given fields; returns the updated worker, or None if it is gone."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")

        def work(conn: sa.Connection) -> Worker | None:
            result = conn.execute(
                workers.update()
                .where(_live(organization_id, worker_id))
                .values(**_encode(changes), updated_at=now)
            )
            if result.rowcount == 0:
                return None
            return find_worker(conn, organization_id, worker_id)

        return await self._db.write(work)

    async def delete(self, organization_id: str, worker_id: str, now: datetime) -> bool:
        """Soft delete: the row and everything under it stay stored; its schedules stop."""

        def work(conn: sa.Connection) -> bool:
            deleted = conn.execute(
                workers.update().where(_live(organization_id, worker_id)).values(deleted_at=now)
            )
            if not deleted.rowcount:
                return False
            conn.execute(
                schedules.update()
                .where(schedules.c.worker_id == worker_id, schedules.c.cancelled_at.is_(None))
                .values(cancelled_at=now)
            )
            self._db.publish(conn, SCHEDULES_TOPIC)
            return True

        return await self._db.write(work)

    async def list_visible(
        self, organization_id: str, user_id: str, *, offset: int, limit: int
    ) -> tuple[list[Worker], int]:
        """Live workers the user may see, newest first, with the total count."""
        visible = _visible(organization_id, user_id)

        def work(conn: sa.Connection) -> tuple[list[Worker], int]:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(workers).where(visible)
            ).scalar_one()
            rows = conn.execute(
                sa.select(workers)
                .where(visible)
                .order_by(workers.c.created_at.desc(), workers.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [worker_from_row(row) for row in rows], int(total)

        return await self._db.read(work)

    async def overview(
        self, organization_id: str, user_id: str, *, search: str, offset: int, limit: int
    ) -> tuple[list[WorkerOverview], int]:
        """Like `list_visible`, with each worker's task count, credits and last run, and only
        workers whose title or summary contains `search` (any case). Two queries a page."""
        visible = _visible(organization_id, user_id)
        if search:
            pattern = "%" + _escape_like(search.lower()) + "%"
            visible = sa.and_(
                visible,
                sa.or_(
                    sa.func.lower(workers.c.title).like(pattern, escape="\\"),
                    sa.func.lower(workers.c.summary).like(pattern, escape="\\"),
                ),
            )

        def work(conn: sa.Connection) -> tuple[list[WorkerOverview], int]:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(workers).where(visible)
            ).scalar_one()
            found = [
                worker_from_row(row)
                for row in conn.execute(
                    sa.select(workers)
                    .where(visible)
                    .order_by(workers.c.created_at.desc(), workers.c.id.desc())
                    .offset(offset)
                    .limit(limit)
                )
            ]
            stats = {
                row.worker_id: row
                for row in conn.execute(
                    sa.select(
                        tasks.c.worker_id,
                        sa.func.count().filter(tasks.c.archived_at.is_(None)).label("count"),
                        sa.func.coalesce(sa.func.sum(tasks.c.total_credits), 0).label("credits"),
                        sa.func.max(tasks.c.created_at).label("last_run_at"),
                    )
                    .where(
                        tasks.c.organization_id == organization_id,
                        tasks.c.worker_id.in_([worker.id for worker in found]),
                    )
                    .group_by(tasks.c.worker_id)
                )
            }
            return [_overview(worker, stats.get(worker.id)) for worker in found], int(total)

        return await self._db.read(work)


def _overview(worker: Worker, row: Any) -> WorkerOverview:
    if row is None:
        return WorkerOverview(worker, 0, 0, None)
    # `max()` keeps its argument's type, so the timestamp arrives as a datetime.
    return WorkerOverview(worker, int(row.count), int(row.credits), row.last_run_at)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _visible(organization_id: str, user_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        workers.c.organization_id == organization_id,
        workers.c.deleted_at.is_(None),
        sa.or_(workers.c.visibility == Visibility.PUBLIC.value, workers.c.user_id == user_id),
    )


def _live(
    organization_id: str | sa.BindParameter[str], worker_id: str | sa.BindParameter[str]
) -> sa.ColumnElement[bool]:
    return sa.and_(
        workers.c.id == worker_id,
        workers.c.organization_id == organization_id,
        workers.c.deleted_at.is_(None),
    )


def _encode(changes: dict[str, Any]) -> dict[str, Any]:
    return {name: _column_value(value) for name, value in changes.items()}


def _column_value(value: Any) -> Any:
    if isinstance(value, Visibility):
        return value.value
    return list(value) if isinstance(value, tuple) else value


_INSERT_WORKER = Prebuilt(workers.insert())
_LIVE_WORKER = Prebuilt(
    sa.select(workers).where(
        _live(
            sa.bindparam("organization_id", type_=sa.String),
            sa.bindparam("worker_id", type_=sa.String),
        )
    )
)


def insert_worker(conn: sa.Connection, worker: Worker) -> None:
    _INSERT_WORKER.run(
        conn,
        {
            "id": worker.id,
            "organization_id": worker.organization_id,
            "user_id": worker.user_id,
            "title": worker.title,
            "instructions": worker.instructions,
            "summary": worker.summary,
            "output_schema": worker.output_schema,
            "visibility": worker.visibility.value,
            "model": worker.model,
            "created_at": worker.created_at,
            "updated_at": worker.updated_at,
            "email_allow_list": list(worker.email_allow_list),
        },
    )


def find_worker(conn: sa.Connection, organization_id: str, worker_id: str) -> Worker | None:
    params = {"organization_id": organization_id, "worker_id": worker_id}
    row = _LIVE_WORKER.first(conn, params)
    return None if row is None else worker_from_row(row)


def worker_from_row(row: Any) -> Worker:
    return Worker(
        id=row.id,
        organization_id=row.organization_id,
        user_id=row.user_id,
        title=row.title,
        instructions=row.instructions,
        summary=row.summary,
        output_schema=row.output_schema,
        visibility=Visibility(row.visibility),
        model=row.model,
        created_at=row.created_at,
        updated_at=row.updated_at,
        email_allow_list=tuple(row.email_allow_list or ()),
    )
