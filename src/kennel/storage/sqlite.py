"""SQLite's plumbing: its engines, the connections the event loop keeps, and its one writer.

A transaction on SQLite is a few dozen microseconds of work in its C library, while handing it
to a thread costs more than that: the hop itself (about 0.1 ms of CPU), and then a wait for the
GIL, which a busy event loop hands over only when it runs out of work (the loop releases and
takes the GIL back around every socket call, so the waiting thread keeps losing the race for
it). The first chunk of a streamed answer waited 2 to 3 ms for the writer thread while the loop
read the rest of the model's answer. So short transactions run on the loop itself whenever they
need not wait (`KeptConnection`, `SqliteWriter`), and threads take only what could.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa

from kennel import jsonvalues

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
"""How long a statement waits for another process's write to end (a `kennel` admin command
writing beside the server) before it fails."""
CHECKPOINT_EVERY = 100
"""Write transactions between two checkpoints of the write-ahead log. SQLite checkpoints by
itself on the commit that finds 1000 pages in its log, which would stall the loop for the
copy and its fsyncs (about 7 ms here) when that commit runs there; the writer thread checkpoints
instead. A task writes two or three small transactions of a few pages each, so the log stays
near SQLite's own bound."""


def sqlite_engine(
    url: sa.URL, *, pool_size: int, begin: str, checkpoints: bool = True
) -> sa.Engine:
    """An engine whose transactions start with `begin` (`BEGIN IMMEDIATE` for the writer).
    Without `checkpoints` its connections leave the write-ahead log to an explicit
    checkpoint."""
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=300,
        # Every use is a `begin()` block that commits or rolls back, so a connection always
        # comes back clean: the pool's own rollback would be wasted work.
        pool_reset_on_return=None,
        json_serializer=jsonvalues.dumps,
        # Pooled connections move between the worker threads, one thread at a time.
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front;
    # take control of BEGIN so a writer holds the lock for its whole transaction (SQLAlchemy's
    # documented recipe for SQLite transactions).
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # On the driver: `exec_driver_sql` would cost a whole execution context per transaction.
        dbapi_connection = conn.connection.dbapi_connection
        try:
            dbapi_connection.execute(begin)  # type: ignore[union-attr]
        except sqlite3.Error as error:
            raise sa.exc.DBAPIError.instance(
                begin, (), error, sqlite3.Error, dialect=conn.dialect
            ) from error

    return engine


class KeptConnection:
    """A connection of `engine` kept open from one use to the next, and replaced once it broke
    (SQLAlchemy invalidates a connection when the driver says it is gone)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._conn: sa.Connection | None = None

    def get(self) -> sa.Connection:
        conn = self._conn
        if conn is None or conn.invalidated:
            if conn is not None:
                conn.close()  # hands its broken connection's place back to the pool
            conn = self._conn = self._engine.connect()
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SqliteWriter:
    """SQLite's one writer: a connection that one write transaction at a time takes.

    Transactions run on the event loop, one after the other as the loop gets to them: store
    code writes a few rows by key, so a transaction holds the loop up for less than a thread's
    hop would cost it. The writer thread takes what must wait: a transaction that finds another
    process writing (a `kennel` admin command) waits there for SQLite's lock, and the thread
    checkpoints the write-ahead log (`CHECKPOINT_EVERY`). While the thread has the connection,
    the loop's transactions wait for it to finish, then run on the loop again.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._connection = KeptConnection(engine)
        self._lock = threading.Lock()
        """Held by whoever uses the connection: the loop, or the writer thread."""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kennel-db-writer")
        self._in_thread: asyncio.Future[Any] | None = None
        """The last job handed to the thread: once it is done, the thread lets go of the lock."""
        self._since_checkpoint = 0

    async def write(self, work: Callable[[sa.Connection], T], committed: Callable[[T], None]) -> T:
        """`work` in one write transaction; `committed(result)` runs on the loop once it is
        committed, even if the caller was cancelled meanwhile (a transaction in the thread runs
        to its end: a thread can't be interrupted)."""
        while not self._lock.acquire(blocking=False):
            assert self._in_thread is not None  # the loop never holds the lock across an await
            await asyncio.wait([self._in_thread])
        try:
            try:
                result = self._transaction(work, wait=False)
            finally:
                self._lock.release()
        except _Busy:
            result = await self._waiting_in_thread(work, committed)
        else:
            committed(result)
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self._to_thread(self._checkpoint)
        return result

    def close(self) -> None:
        """Wait for the thread's jobs, then close the connection (SQLite checkpoints the log as
        its last connection closes)."""
        self._thread.shutdown(wait=True)
        with self._lock:
            self._connection.close()

    async def _waiting_in_thread(
        self, work: Callable[[sa.Connection], T], committed: Callable[[T], None]
    ) -> T:
        """`work` in the thread, which waits for the other process's lock."""

        def transaction() -> T:
            with self._lock:
                return self._transaction(work, wait=True)

        def when_done(job: asyncio.Future[T]) -> None:
            if job.exception() is None:
                committed(job.result())

        job = self._to_thread(transaction)
        job.add_done_callback(when_done)
        # Shielded: the job must stay what `write` waits for until the thread is done with it.
        return await asyncio.shield(job)

    def _to_thread(self, call: Callable[[], T]) -> asyncio.Future[T]:
        job = asyncio.get_running_loop().run_in_executor(self._thread, call)
        self._in_thread = job
        return job

    def _transaction(self, work: Callable[[sa.Connection], T], *, wait: bool) -> T:
        conn = self._connection.get()
        with _begin(conn, wait=wait):
            return work(conn)

    def _checkpoint(self) -> None:
        """Copy the log's pages into the database as far as no reader still needs them
        (`PASSIVE`: it waits for no one); a checkpoint that fails is tried again later."""
        try:
            with self._lock:
                driver = self._connection.get().connection.dbapi_connection
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)").close()  # type: ignore[union-attr]
        except (sqlite3.Error, sa.exc.DBAPIError):
            logger.warning("checkpointing the database's write-ahead log failed", exc_info=True)


class _Busy(Exception):
    """Another process holds the write lock."""


def _begin(conn: sa.Connection, *, wait: bool) -> sa.RootTransaction:
    """`conn`'s transaction begun (`BEGIN IMMEDIATE`, see `sqlite_engine`). Unless it may
    `wait`, a write lock held elsewhere raises `_Busy` at once."""
    if wait:
        return conn.begin()
    driver = conn.connection.dbapi_connection
    assert driver is not None  # a kept connection is a live one
    driver.execute("PRAGMA busy_timeout=0")
    try:
        return conn.begin()
    except sa.exc.OperationalError as error:
        if getattr(error.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
            raise _Busy from error
        raise
    finally:
        driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
