"""PostgreSQL connections: checked after sitting idle, not before every transaction."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa

from databases import PG_DSN, postgres_url
from kennel.storage import database
from kennel.storage.database import Database

pytestmark = pytest.mark.postgres

BACKEND = sa.text("SELECT pg_backend_pid()")


async def _backend(db: Database) -> int:
    return int(await db.read(lambda conn: conn.execute(BACKEND).scalar_one()))


async def test_a_connection_dropped_while_idle_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
    async with postgres_url() as url:
        db = Database(url, pool_size=1)
        try:
            dropped = await _backend(db)
            admin = await asyncpg.connect(PG_DSN)
            try:  # what a server restart or an idle timeout does to a pooled connection
                await admin.execute("SELECT pg_terminate_backend($1)", dropped)
            finally:
                await admin.close()
            assert await _backend(db) != dropped
        finally:
            await db.close()


async def test_a_connection_in_steady_use_is_not_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", 60.0)
    async with postgres_url() as url:
        db = Database(url, pool_size=1)
        pings = 0
        dialect = db._engine.sync_engine.dialect
        do_ping = dialect.do_ping

        def counting(dbapi_connection: object) -> bool:
            nonlocal pings
            pings += 1
            return do_ping(dbapi_connection)

        monkeypatch.setattr(dialect, "do_ping", counting)
        try:
            first = await _backend(db)
            assert [await _backend(db) for _ in range(3)] == [first] * 3
            assert pings == 0
        finally:
            await db.close()


async def test_reads_run_without_a_transaction_and_writes_in_one() -> None:
    """A read's statements each see what is committed (PostgreSQL's read committed) without
    BEGIN and COMMIT, two round trips; a write is one transaction. The connection a read used
    goes back to the pool as it came: the next write on it is a transaction again."""

    def in_transaction(conn: sa.Connection) -> bool:
        conn.execute(BACKEND)
        return bool(conn.connection.driver_connection.is_in_transaction())  # type: ignore[union-attr]

    async with postgres_url() as url:
        db = Database(url, pool_size=1)
        try:
            assert await db.read(in_transaction) is False
            assert await db.write(in_transaction) is True
            assert await db.read(in_transaction) is False
        finally:
            await db.close()
