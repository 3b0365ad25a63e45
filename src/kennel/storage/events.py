"""A task's event log: appended by the run that holds the turn's job, read by everyone."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from kennel.models import Event
from kennel.storage.database import Database
from kennel.storage.tables import task_events, tasks, turns

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
# ... and every writer, the appends.
_RESERVE = (
    tasks.update()
    .where(tasks.c.key == sa.bindparam("task_key"))
    .values(event_seq=tasks.c.event_seq + sa.bindparam("count", type_=sa.BigInteger))
    .returning(tasks.c.event_seq)
)
_INSERT = task_events.insert()
_FIRST_EVENT = (
    turns.update()
    .where(turns.c.id == sa.bindparam("turn_id"), turns.c.first_event_seq.is_(None))
    .values(first_event_seq=sa.bindparam("first", type_=sa.BigInteger))
)


class EventStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def after(self, task_key: int, after_seq: int, limit: int = 1000) -> list[Event]:
        """Events with a sequence number above `after_seq`, in order."""
        params = {"task_key": task_key, "after_seq": after_seq, "limit": limit}
        rows = await self._db.read(lambda conn: conn.execute(_EVENTS_AFTER, params).all())
        return [Event(row.seq, row.turn_id, row.body) for row in rows]


def append_events(conn: sa.Connection, task_key: int, turn_id: str, bodies: Sequence[str]) -> int:
    """Append a turn's chunks to its task's log in the caller's transaction (the run's, fenced
    on its lease); returns the log's last sequence number."""
    last = int(conn.execute(_RESERVE, {"task_key": task_key, "count": len(bodies)}).scalar_one())
    if not bodies:
        return last
    first = last - len(bodies) + 1
    conn.execute(
        _INSERT,
        [
            {"task_key": task_key, "seq": first + offset, "turn_id": turn_id, "body": body}
            for offset, body in enumerate(bodies)
        ],
    )
    conn.execute(_FIRST_EVENT, {"turn_id": turn_id, "first": first})
    return last
