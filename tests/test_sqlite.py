"""On SQLite the event loop runs the transactions of every request itself: the short reads
(`glance`) on a connection it keeps, and every write on the writer's connection. The writer's
thread only waits for another process's lock, and checkpoints the log."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from kennel.storage import sqlite
from kennel.storage.database import Database

ROWS = sa.text("SELECT count(*) FROM t")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "kennel.db"


@pytest.fixture
async def db(path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{path}")
    await database.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (id INTEGER, b BLOB)"))
    yield database
    await database.close()


def _insert(row: int) -> sa.TextClause:
    return sa.text(f"INSERT INTO t (id) VALUES ({row})")


def _driver(conn: sa.Connection) -> object:
    return conn.connection.dbapi_connection


def _where(conn: sa.Connection) -> tuple[int, object]:
    return threading.get_ident(), _driver(conn)


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
    await db.write(lambda conn: conn.execute(_insert(1)))
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 1


async def test_a_glance_that_fails_leaves_no_transaction_open(db: Database) -> None:
    def failing(conn: sa.Connection) -> None:
        conn.execute(ROWS)
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError):
        await db.glance(failing)
    await db.write(lambda conn: conn.execute(_insert(1)))
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 1


async def test_a_write_runs_on_the_loop_and_wakes_its_waiters(db: Database) -> None:
    topic = "t:1"

    def work(conn: sa.Connection) -> int:
        conn.execute(_insert(1))
        db.publish(conn, topic)
        return threading.get_ident()

    with db.wakeups.subscribe(topic) as wakeup:
        assert await db.write(work) == threading.get_ident()
        assert await wakeup.wait(0)  # woken once committed
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 1


async def test_a_write_waits_in_the_thread_while_another_process_writes(
    db: Database, path: Path
) -> None:
    """The loop is not held up: the write waits for the lock in the thread, and the writes
    that come meanwhile wait for the thread, then run on the loop."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # say, an admin command writing beside the server
    order: list[tuple[int, int]] = []

    def work(row: int) -> Callable[[sa.Connection], None]:
        def insert(conn: sa.Connection) -> None:
            conn.execute(_insert(row))
            order.append((row, threading.get_ident()))

        return insert

    try:
        first = asyncio.ensure_future(db.write(work(1)))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(db.write(work(2)))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done() and order == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await asyncio.gather(first, second)
    loop = threading.get_ident()
    assert order[0][0] == 1 and order[0][1] != loop
    assert order[1] == (2, loop)


async def test_a_write_whose_caller_is_cancelled_still_commits_and_wakes_its_waiters(
    db: Database, path: Path
) -> None:
    """Its transaction goes on in the thread: the writes after it wait for it, and its
    wake-ups are sent once it commits."""

    def first_write(conn: sa.Connection) -> None:
        conn.execute(_insert(1))
        db.publish(conn, "t:1")

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with db.wakeups.subscribe("t:1") as wakeup:
        try:
            first = asyncio.ensure_future(db.write(first_write))
            await asyncio.sleep(0.05)
            first.cancel()
            second = asyncio.ensure_future(db.write(lambda conn: conn.execute(_insert(2))))
            await asyncio.sleep(0.05)
            assert not second.done()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await second
        assert first.cancelled()
        assert await wakeup.wait(1)
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 2


async def test_a_write_that_fails_rolls_back_and_the_writer_goes_on(db: Database) -> None:
    def failing(conn: sa.Connection) -> None:
        conn.execute(_insert(1))
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError):
        await db.write(failing)
    await db.write(lambda conn: conn.execute(_insert(2)))
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 1


@pytest.mark.parametrize("way", ["glance", "write"])
async def test_after_its_connection_broke_the_loop_opens_another(db: Database, way: str) -> None:
    run = getattr(db, way)
    broken = await run(_driver)

    def breaking(conn: sa.Connection) -> None:
        conn.invalidate()  # as SQLAlchemy does when the driver says the connection is gone
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("disk I/O error"))

    with pytest.raises(sa.exc.OperationalError):
        await run(breaking)
    assert await run(_driver) is not broken
    await db.write(lambda conn: conn.execute(_insert(1)))
    assert await db.glance(lambda conn: conn.execute(ROWS).scalar_one()) == 1


async def test_the_writer_thread_checkpoints_the_log(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's connection never checkpoints on its own (a commit on the loop would copy
    the log there); the thread does, every few writes."""
    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY", 4)
    db = Database(f"sqlite:///{path}")
    try:
        await db.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (id INTEGER, b BLOB)"))
        pragma = sa.text("PRAGMA wal_autocheckpoint")
        assert await db.write(lambda conn: conn.execute(pragma).scalar_one()) == 0
        empty = path.stat().st_size
        blob = sa.text("INSERT INTO t (b) VALUES (zeroblob(100000))")
        for _ in range(2):
            await db.write(lambda conn: conn.execute(blob))
        for _ in range(50):  # the checkpoint runs in the thread: give it time
            if path.stat().st_size > empty + 150_000:
                break
            await asyncio.sleep(0.02)
        assert path.stat().st_size > empty + 150_000  # the pages left the log
    finally:
        await db.close()
