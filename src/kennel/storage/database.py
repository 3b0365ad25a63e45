"""Engines and transactions for SQLite (embedded) and PostgreSQL (scale-out)."""

from __future__ import annotations

import asyncio
import fcntl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

import sqlalchemy as sa

from kennel import jsonvalues
from kennel.errors import DatabaseInUseError
from kennel.storage.sqlite import KeptConnection, SqliteWriter, sqlite_engine
from kennel.storage.statements import Prebuilt
from kennel.storage.wakeups import CHANNEL, WATCHING, Wakeups

_TOPICS = "kennel_topics"
READERS = 4
IDLE_PING_SECONDS = 10.0
"""A pooled PostgreSQL connection that sat unused this long is checked before it is used: the
server may have dropped it meanwhile (a restart, an idle timeout). One in steady use is not:
a check before every transaction would cost a round trip each."""
T = TypeVar("T")
Q = TypeVar("Q", bound=sa.Select[Any])
_MIGRATION_LOCK = 7349021


class Dialect:
    """Everything that differs between SQLite and PostgreSQL above the engine, decided once.

    SQLite has one writer: a write transaction takes the whole database (`BEGIN IMMEDIATE`),
    so a claim needs no row locks, and one process owns the file, so in-process wake-ups reach
    every waiter. PostgreSQL has many writers in many processes: claims skip rows another
    transaction holds (`FOR UPDATE SKIP LOCKED`) and wake-ups go through `NOTIFY`.
    """

    def __init__(self, url: str) -> None:
        self.is_sqlite = url.startswith("sqlite")

    @property
    def sole_process(self) -> bool:
        """One process owns the database (a file lock sees to it on SQLite): every job still
        running when it starts belongs to a dead run, and every watcher is a local one."""
        return self.is_sqlite

    def claiming(self, query: Q, of: sa.Table) -> Q:
        """`query` selecting rows to take: concurrent claimers split them instead of waiting."""
        if self.is_sqlite:
            return query
        return query.with_for_update(of=of, skip_locked=True)

    def locking(self, query: Q, of: sa.Table | None = None) -> Q:
        """`query` holding its rows until the transaction ends (consecutive numbers, firings)."""
        if self.is_sqlite:
            return query
        return query.with_for_update(of=of)

    def serialize_migrations(self, conn: sa.Connection) -> None:
        """Several processes may start together on one PostgreSQL: one migrates, the others
        wait (SQLite's single writer already serialises them)."""
        if not self.is_sqlite:
            conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))

    def notify(self, conn: sa.Connection, payload: str) -> None:
        """Tell other processes `payload` (see `Wakeups.payload`) when `conn`'s transaction
        commits."""
        if not self.is_sqlite:
            _NOTIFY.scalar(conn, {"channel": CHANNEL, "payload": payload})


_NOTIFY = Prebuilt(sa.select(sa.func.pg_notify(sa.bindparam("channel"), sa.bindparam("payload"))))


class Database:
    """Owns the engines and runs transactions: `await db.write(work)` runs `work(conn)` in one
    transaction and returns its result.

    Store code is plain synchronous SQLAlchemy Core, a transaction a function. On SQLite a
    write runs whole on the event loop, on the connection of SQLite's one writer; only a write
    that finds another process holding SQLite's lock waits for it in the writer's thread
    (`SqliteWriter`). The few-row reads of every request (`glance`) run on the loop too, on a
    connection it keeps; reads that scan or list run whole in a reader thread. A thread costs
    one hop per transaction, never one per statement (the biggest cost of async SQLite).
    On PostgreSQL the same function runs on asyncpg through SQLAlchemy's `run_sync`.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.dialect = Dialect(url)
        self.wakeups = Wakeups()
        if self.dialect.is_sqlite:
            _ensure_sqlite_folder(url)
            sync_url = sa.engine.make_url(url).set(drivername="sqlite")
            writer = sqlite_engine(
                sync_url, pool_size=1, begin="BEGIN IMMEDIATE", checkpoints=False
            )
            self._sync_reader = sqlite_engine(sync_url, pool_size=READERS, begin="BEGIN")
            glancer = sqlite_engine(sync_url, pool_size=1, begin="BEGIN")
            self._sqlite_engines = [writer, self._sync_reader, glancer]
            self._writer = SqliteWriter(writer)
            self._glancing = KeptConnection(glancer)
            self._read_threads = ThreadPoolExecutor(READERS, thread_name_prefix="kennel-db-reader")
        else:
            # Imported here: SQLAlchemy's asyncio layer brings its ORM (about 7 MB) into a
            # process, which a server on SQLite never uses.
            from sqlalchemy.ext.asyncio import create_async_engine

            self._engine = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                json_serializer=jsonvalues.dumps,
            )
            _ping_when_idle(self._engine.sync_engine)
            self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")

    async def write(self, work: Callable[[sa.Connection], T]) -> T:
        """`work` in one read-write transaction, committed if it returns; topics it published
        wake their waiters after the commit."""
        if self.dialect.is_sqlite:
            result, _topics = await self._writer.write(
                partial(_with_topics, work=work), lambda done: self._wake(done[1])
            )
            return result
        async with self._engine.begin() as conn:
            result, topics = await conn.run_sync(_with_topics, work)
        self._wake(topics)
        return result

    async def read(self, work: Callable[[sa.Connection], T]) -> T:
        """`work`, reading only. On SQLite it runs in one read transaction: a consistent
        snapshot. On PostgreSQL its statements run without a transaction: each sees what was
        committed when it started, as each does in a transaction at PostgreSQL's default
        isolation (read committed), without the two round trips of BEGIN and COMMIT. A reader
        that needs its reads in an order (a turn's status before its events) runs them in it.
        """
        if self.dialect.is_sqlite:
            return await asyncio.get_running_loop().run_in_executor(
                self._read_threads, _in_transaction, self._sync_reader, work
            )
        async with self._autocommit.connect() as conn:
            return await conn.run_sync(work)

    async def glance(self, work: Callable[[sa.Connection], T]) -> T:
        """`work`, reading by keys what a request or a run needs of one caller or one task (an
        API key, the submission's or the turn's context, a task's news or snapshot), as
        nearly every request does. On SQLite it runs at once, on the event loop's own
        connection, which it keeps: a reader thread would cost more than such a read does (a
        hop of about 0.1 ms of CPU, and under load a wait for the GIL), and so would taking a
        connection from a pool (about 0.04 ms); the loop then handles every row it read
        anyway. Reads that scan or list (pages, searches, exports) go through `read`, which
        keeps the loop free while SQLite works. On PostgreSQL this is `read`."""
        if not self.dialect.is_sqlite:
            return await self.read(work)
        conn = self._glancing.get()
        with conn.begin():
            return work(conn)

    def publish(self, conn: sa.Connection, *topics: str) -> None:
        """Wake the waiters of `topics` once this transaction commits: in this process directly,
        in other processes through PostgreSQL's NOTIFY (which is also sent only on commit)."""
        conn.info.setdefault(_TOPICS, set()).update(topics)
        self.dialect.notify(conn, self.wakeups.payload(topics))

    async def say_watching(self, topic: str) -> None:
        """Tell the other processes that a reader here follows `topic` (see `Wakeups.is_watched`);
        to be said again every `WATCH_SECONDS` while it does. One process needs no telling."""
        if self.dialect.sole_process:
            return
        payload = self.wakeups.payload([WATCHING + topic])
        await self.read(lambda conn: self.dialect.notify(conn, payload))

    def _wake(self, topics: set[str] | None) -> None:
        for topic in topics or ():
            self.wakeups.publish_local(topic)

    async def start_listening(self) -> None:
        if not self.dialect.is_sqlite:
            await self.wakeups.listen(self.url)

    async def close(self) -> None:
        await self.wakeups.close()
        if self.dialect.is_sqlite:
            self._writer.close()
            self._read_threads.shutdown(wait=True)
            self._glancing.close()
            for engine in self._sqlite_engines:
                engine.dispose()
        else:
            await self._engine.dispose()


def _in_transaction(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)


def _with_topics(
    conn: sa.Connection, work: Callable[[sa.Connection], T]
) -> tuple[T, set[str] | None]:
    # Set up front rather than cleaned up after: a transaction cut short (cancelled on
    # PostgreSQL) leaves a connection whose `info` can't be read until it is rolled back.
    conn.info[_TOPICS] = set()
    result = work(conn)
    return result, conn.info.pop(_TOPICS)


def _ping_when_idle(engine: sa.Engine) -> None:
    """Check a connection that sat idle in the pool (`IDLE_PING_SECONDS`) before handing it
    out; a dead one is replaced by a new connection (the pool retries when a checkout raises
    `DisconnectionError`)."""

    @sa.event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @sa.event.listens_for(engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error:
            alive = False
        if not alive:
            raise sa.exc.DisconnectionError("a pooled connection was dropped while idle")


_IDLE_SINCE = "kennel_idle_since"


def _ensure_sqlite_folder(url: str) -> None:
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


class ProcessLock:
    """One Kennel process per SQLite database: SQLite has a single writer, and the runner
    treats every running job it finds at start as abandoned, which is only true if it is alone."""

    def __init__(self, handle: TextIO | None) -> None:
        self._handle = handle

    @classmethod
    def for_database(cls, database: Database) -> ProcessLock:
        path = sa.engine.make_url(database.url).database
        if not database.dialect.sole_process or not path or path == ":memory:":
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
