"""What organizations and workers used, per day: one GROUP BY over the finished turns."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from kennel.models import DailyUsage
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
        self, since: date, *, organization_id: str | None = None, per_worker: bool = True
    ) -> list[DailyUsage]:
        """Turns finished on `since` (UTC) or later, summed per day and per worker (or per
        organization), ordered by day, organization name and worker title."""
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
        per = sums.subquery("per")
        joined = per.join(organizations, organizations.c.id == per.c.organization_id)
        names: list[Any] = [organizations.c.name]
        order: list[Any] = [per.c.day, organizations.c.name]
        if per_worker:
            joined = joined.join(workers, workers.c.id == per.c.worker_id)
            names.append(workers.c.title)
            order += [workers.c.title, per.c.worker_id]
        query = sa.select(per, *names).select_from(joined).order_by(*order)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [_daily(row, per_worker) for row in rows]


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
