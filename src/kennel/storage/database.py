"""Engines and transactions for SQLite (embedded) and PostgreSQL (scale-out)."""

from __future__ import annotations

import fcntl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from kennel.errors import DatabaseInUseError
from kennel.storage.wakeups import CHANNEL, Wakeups

_TOPICS = "kennel_topics"


class Database:
    """Owns the engines. SQLite gets one writer connection (SQLite allows one writer at a time,
    so queueing on our own pool beats spinning on `database is locked`) and a few readers."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.wakeups = Wakeups()
        if self.is_sqlite:
            _ensure_sqlite_folder(url)
            self._writer = _sqlite_engine(url, pool_size=1, begin="BEGIN IMMEDIATE")
            self._reader = _sqlite_engine(url, pool_size=4, begin="BEGIN")
        else:
            engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self._writer = self._reader = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._writer

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One read-write transaction, committed when the block exits without error."""
        async with self._writer.begin() as conn:
            try:
                yield conn
            finally:
                topics: set[str] | None = conn.info.pop(_TOPICS, None)
        for topic in topics or ():
            self.wakeups.publish_local(topic)

    async def publish(self, conn: AsyncConnection, *topics: str) -> None:
        """Wake the waiters of `topics` once this transaction commits: in this process directly,
        in other processes through PostgreSQL's NOTIFY (which is also sent only on commit)."""
        conn.info.setdefault(_TOPICS, set()).update(topics)
        if not self.is_sqlite:
            await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, ",".join(topics))))

    async def start_listening(self) -> None:
        if not self.is_sqlite:
            await self.wakeups.listen(self.url)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """One read-only transaction: a consistent snapshot for the block."""
        async with self._reader.begin() as conn:
            yield conn

    async def close(self) -> None:
        await self.wakeups.close()
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()


def _ensure_sqlite_folder(url: str) -> None:
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_engine(url: str, *, pool_size: int, begin: str) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=300,
        # Every use is a `begin()` block that commits or rolls back, so a connection always
        # comes back clean: the pool's own rollback would only cost a trip to the driver thread.
        pool_reset_on_return=None,
        connect_args={"timeout": 30},
    )

    # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front;
    # take control of BEGIN so a writer holds the lock for its whole transaction (SQLAlchemy's
    # documented recipe for SQLite transactions).
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


class ProcessLock:
    """One Kennel process per SQLite database: SQLite has a single writer, and the runner
    treats every running job it finds at start as abandoned, which is only true if it is alone."""

    def __init__(self, handle: TextIO | None) -> None:
        self._handle = handle

    @classmethod
    def for_database(cls, database: Database) -> ProcessLock:
        path = sa.engine.make_url(database.url).database
        if not database.is_sqlite or not path or path == ":memory:":
            return cls(None)
        lock_path = Path(f"{path}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DatabaseInUseError(
                f"another Kennel process is serving {path}; stop it first, or use PostgreSQL "
                "(KENNEL_DATABASE_URL) to run several processes"
            ) from None
        return cls(handle)

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
