"""Task sources: the pages a task's worker fetched, one per URL, in the order first fetched."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from kennel.models import Source
from kennel.storage.statements import Prebuilt, upsert
from kennel.storage.tables import task_sources

MAX_TITLE_LENGTH = 500


def record_task_sources(
    conn: sa.Connection, task_key: int, sources: Sequence[Source], now: datetime
) -> None:
    """Add the turn's sources to the task's; a page it already had keeps its place and gains a
    title if it had none."""
    if not sources:
        return
    known = conn.execute(
        sa.select(sa.func.count())
        .select_from(task_sources)
        .where(task_sources.c.task_key == task_key)
    ).scalar_one()
    statement = upsert(conn, task_sources).values(
        [
            {
                "task_key": task_key,
                "id": source.id,
                "url": source.url,
                "title": None if source.title is None else source.title[:MAX_TITLE_LENGTH],
                "position": known + index,
                "created_at": now,
            }
            for index, source in enumerate(sources)
        ]
    )
    statement = statement.on_conflict_do_update(
        index_elements=["task_key", "id"],
        set_={"title": sa.func.coalesce(statement.excluded.title, task_sources.c.title)},
    )
    conn.execute(statement)


_SOURCES_OF_TASK = Prebuilt(
    sa.select(task_sources.c.id, task_sources.c.url, task_sources.c.title)
    .where(task_sources.c.task_key == sa.bindparam("task_key"))
    .order_by(task_sources.c.position)
)


def task_sources_of(conn: sa.Connection, task_key: int) -> list[Source]:
    rows = _SOURCES_OF_TASK.rows(conn, {"task_key": task_key})
    return [Source(row.id, row.url, row.title) for row in rows]
