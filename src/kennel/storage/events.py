"""A task's event log: appended by the run that holds the turn's job, read by everyone."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from kennel.models import Event, TaskStatus
from kennel.storage.database import Database
from kennel.storage.statements import Prebuilt
from kennel.storage.tables import task_events, tasks, turns

# Built once: every reader of a stream runs it (see `kennel.storage`).
_EVENTS_AFTER = Prebuilt(
    sa.select(task_events.c.seq, task_events.c.turn_id, task_events.c.body)
    .where(
        task_events.c.task_key == sa.bindparam("task_key"),
        task_events.c.seq > sa.bindparam("after_seq"),
    )
    .order_by(task_events.c.seq)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
# Read first, so that an ended turn's (or task's) events are all among those read after it.
_TURN_STATUS = Prebuilt(sa.select(turns.c.status).where(turns.c.id == sa.bindparam("turn_id")))
_TASK_STATUS = Prebuilt(sa.select(tasks.c.status).where(tasks.c.key == sa.bindparam("task_key")))
# ... and every writer, the appends.
_RESERVE = Prebuilt(
    tasks.update()
    .where(tasks.c.key == sa.bindparam("task_key"))
    .values(event_seq=tasks.c.event_seq + sa.bindparam("count", type_=sa.BigInteger))
    .returning(tasks.c.event_seq)
)
_INSERT = Prebuilt(task_events.insert())
_FIRST_EVENT = Prebuilt(
    turns.update()
    .where(turns.c.id == sa.bindparam("turn_id"), turns.c.first_event_seq.is_(None))
    .values(first_event_seq=sa.bindparam("first", type_=sa.BigInteger))
)


class EventStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def news(
        self, task_key: int, after_seq: int, turn_id: str | None, limit: int = 1000
    ) -> tuple[list[Event], bool]:
        """Events above `after_seq`, and whether they are the last: the turn (or, without one,
        the task) had ended before they were read, and there were fewer than `limit`. One read
        for a follower's wake-up.
        """
        params = {"task_key": task_key, "after_seq": after_seq, "limit": limit}

        def work(conn: sa.Connection) -> tuple[list[Event], bool]:
            if turn_id is None:
                status = _TASK_STATUS.scalar(conn, params)
            else:
                status = _TURN_STATUS.scalar(conn, {"turn_id": turn_id})
            rows = _EVENTS_AFTER.rows(conn, params)
            ended = status is None or TaskStatus(status).is_terminal
            events = [Event(row.seq, row.turn_id, row.body) for row in rows]
            return events, ended and len(rows) < limit

        return await self._db.glance(work)


def append_events(conn: sa.Connection, task_key: int, turn_id: str, bodies: Sequence[str]) -> int:
    """Append a turn's chunks to its task's log in the caller's transaction (the run's, fenced
    on its lease); returns the log's last sequence number."""
    last = int(_RESERVE.scalar_one(conn, {"task_key": task_key, "count": len(bodies)}))
    if not bodies:
        return last
    first = last - len(bodies) + 1
    _INSERT.run_many(
        conn,
        [
            {"task_key": task_key, "seq": first + offset, "turn_id": turn_id, "body": body}
            for offset, body in enumerate(bodies)
        ],
    )
    _FIRST_EVENT.run(conn, {"turn_id": turn_id, "first": first})
    return last
