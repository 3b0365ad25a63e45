"""What organizations and workers used, per day: one GROUP BY over the finished turns."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from kennel.models import DailyUsage, Visibility
from kennel.storage.database import Database
from kennel.storage.tables import organizations, tasks, turns, workers

DAY_MS = 86_400_000
# Timestamps are epoch milliseconds, so integer division gives the UTC day on both databases.
# The divisor is inlined: PostgreSQL matches GROUP BY expressions by text, not by bound value.
_DAY = sa.type_coerce(turns.c.completed_at, sa.BigInteger) // sa.literal_column(
    str(DAY_MS), sa.BigInteger
)


class UsageStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def daily(
        self,
        since: date,
        *,
        organization_id: str | None = None,
        per_worker: bool = True,
        viewer_id: str | None = None,
    ) -> list[DailyUsage]:
        """Turns finished on `since` (UTC) or later, summed per day and per worker (or per
        organization), ordered by day, organization name and worker title. With `viewer_id`,
        other users' private workers are summed together, as a worker with no id and no title."""
        start = datetime(since.year, since.month, since.day, tzinfo=UTC)
        keys: list[Any] = [_DAY.label("day"), tasks.c.organization_id]
        if per_worker:
            keys.append(tasks.c.worker_id)
        # Sum by ids first, then name the (few) sums: joining names to every turn costs more.
        sums = (
            sa.select(
                *keys,
                sa.func.count().label("turns"),
                sa.func.sum(turns.c.input_tokens).label("input_tokens"),
                sa.func.sum(turns.c.output_tokens).label("output_tokens"),
                sa.func.sum(turns.c.credits).label("credits"),
            )
            .select_from(turns.join(tasks, tasks.c.key == turns.c.task_key))
            .where(turns.c.completed_at >= start)
            .group_by(_DAY, *keys[1:])
        )
        if organization_id is not None:
            sums = sums.where(tasks.c.organization_id == organization_id)
        named = _named(sums.subquery("sums"), per_worker, viewer_id)
        groups = [named.c.day, named.c.organization_id, named.c.name]
        if per_worker:
            groups += [named.c.worker_id, named.c.title]
        query = (
            sa.select(
                *groups,
                *(sa.func.sum(named.c[total]).label(total) for total in _TOTALS),
            )
            .group_by(*groups)
            .order_by(*_order(named, per_worker))
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [_daily(row, per_worker) for row in rows]


_TOTALS = ("turns", "input_tokens", "output_tokens", "credits")


def _order(named: sa.Subquery, per_worker: bool) -> list[Any]:
    order: list[Any] = [named.c.day, named.c.name]
    if per_worker:
        # NULLS LAST: the hidden workers' line comes last on both databases.
        order += [sa.nulls_last(named.c.title), named.c.worker_id]
    return order


def _named(sums: sa.Subquery, per_worker: bool, viewer_id: str | None) -> sa.Subquery:
    """The sums with their organization's name and worker's title; a worker the viewer may not
    see loses its id and title, so that the outer query adds such workers up."""
    columns: list[Any] = [*sums.c, organizations.c.name]
    joined = sums.join(organizations, organizations.c.id == sums.c.organization_id)
    if per_worker:
        joined = joined.join(workers, workers.c.id == sums.c.worker_id)
        worker_id: Any = sums.c.worker_id
        title: Any = workers.c.title
        if viewer_id is not None:
            hidden = sa.and_(
                workers.c.visibility == Visibility.PRIVATE.value, workers.c.user_id != viewer_id
            )
            worker_id = sa.case((hidden, None), else_=worker_id)
            title = sa.case((hidden, None), else_=title)
        columns = [c for c in columns if c.name != "worker_id"]
        columns += [worker_id.label("worker_id"), title.label("title")]
    return sa.select(*columns).select_from(joined).subquery("named")


def _daily(row: Any, per_worker: bool) -> DailyUsage:
    return DailyUsage(
        day=datetime.fromtimestamp(int(row.day) * DAY_MS / 1000, tz=UTC).date(),
        organization_id=row.organization_id,
        organization_name=row.name,
        worker_id=row.worker_id if per_worker else None,
        worker_title=row.title if per_worker else None,
        turns=int(row.turns),
        input_tokens=int(row.input_tokens or 0),
        output_tokens=int(row.output_tokens or 0),
        credits=int(row.credits or 0),
    )
