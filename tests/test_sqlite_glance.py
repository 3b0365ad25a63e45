"""On SQLite, the short reads every request makes run on the event loop's own connection."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kennel.storage.database import Database

ROWS = sa.text("SELECT count(*) FROM t")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/kennel.db")
    await database.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (id INTEGER)"))
    yield database
    await database.close()


def _where(conn: sa.Connection) -> tuple[int, object]:
    return threading.get_ident(), conn.connection.dbapi_connection


async def test_a_glance_runs_on_the_loops_thread_with_the_connection_it_keeps(
    db: Database,
) -> None:
    first, second = await db.glance(_where), await db.glance(_where)
    assert first[0] == second[0] == threading.get_ident()
    assert first[1] is second[1]
    thread, _ = await db.read(_where)
    assert thread != threading.get_ident()  # a read of many rows leaves the loop free


async def test_each_glance_sees_what_was_committed_before_it(db: Database) -> None:
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 0
    await db.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (1)"))
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 1


async def test_a_glance_that_fails_leaves_no_transaction_open(db: Database) -> None:
    def failing(conn: sa.Connection) -> None:
        conn.execute(ROWS)
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError):
        await db.glance(failing)
    await db.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (1)"))
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 1


async def test_a_glance_after_its_connection_broke_opens_another(db: Database) -> None:
    broken = await db.glance(_where)

    def breaking(conn: sa.Connection) -> None:
        conn.invalidate()  # as SQLAlchemy does when the driver says the connection is gone
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("disk I/O error"))

    with pytest.raises(sa.exc.OperationalError):
        await db.glance(breaking)
    assert (await db.glance(_where))[1] is not broken[1]
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 0
