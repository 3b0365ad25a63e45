"""Reading a task's event log (appends belong to the run that holds the job: see runs.py)."""

from __future__ import annotations

import sqlalchemy as sa

from kennel.models import Event
from kennel.storage.database import Database
from kennel.storage.tables import task_events

# Built once: every reader of a stream runs it (see `kennel.storage`).
_EVENTS_AFTER = (
    sa.select(task_events.c.seq, task_events.c.turn_id, task_events.c.body)
    .where(
        task_events.c.task_key == sa.bindparam("task_key"),
        task_events.c.seq > sa.bindparam("after_seq"),
    )
    .order_by(task_events.c.seq)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)


class EventStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def after(self, task_key: int, after_seq: int, limit: int = 1000) -> list[Event]:
        """Events with a sequence number above `after_seq`, in order."""
        params = {"task_key": task_key, "after_seq": after_seq, "limit": limit}
        rows = await self._db.read(lambda conn: conn.execute(_EVENTS_AFTER, params).all())
        return [Event(row.seq, row.turn_id, row.body) for row in rows]
