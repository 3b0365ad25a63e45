"""Prebuilt statements run on the driver cursor and answer as `Connection.execute` does."""

from __future__ import annotations

import gc
import importlib
import pkgutil
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

import kennel.storage
from kennel.models.jobs import TURN_JOB
from kennel.storage import jobs as jobs_module
from kennel.storage import tasks as tasks_module
from kennel.storage.database import Database, Dialect
from kennel.storage.statements import Prebuilt, _compile, new_values, setting
from kennel.storage.tables import JSON, EpochMillis, StoredText

STORE_MODULES = [
    f"kennel.storage.{module.name}" for module in pkgutil.iter_modules(kennel.storage.__path__)
]

metadata = sa.MetaData()
probes = sa.Table(
    "prebuilt_probes",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("seen_at", EpochMillis, nullable=True),
    sa.Column("body", JSON, nullable=True),
    sa.Column("note", StoredText, nullable=True),
    sa.Column("live", sa.Boolean, nullable=False),
)
defaulted = sa.Table(
    "prebuilt_defaulted",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("label", sa.String(32), nullable=False, default="python-side"),
)

SEEN = datetime(2026, 12, 6, 13, 0, 0, 123000, tzinfo=UTC)
BY_ID = Prebuilt(sa.select(probes).where(probes.c.id == sa.bindparam("probe_id")))
ALL = Prebuilt(sa.select(probes.c.id, probes.c.count.label("n")).order_by(probes.c.id))
INSERT = Prebuilt(probes.insert())
BUMP = Prebuilt(
    probes.update()
    .where(probes.c.id == sa.bindparam("probe_id"))
    .values(count=probes.c.count + 1, seen_at=None, **setting(["note"]))
    .returning(probes.c.count)
)


def row(probe_id: str, **values: Any) -> dict[str, Any]:
    base = {"id": probe_id, "count": 0, "seen_at": SEEN, "body": {"a": [1, "ü"]}, "note": None}
    return {**base, "live": True, **values}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.write(metadata.create_all)
    try:
        yield database
    finally:
        await database.close()


@contextmanager
def no_connection_execute(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`Connection.execute` raises: what still works ran on the driver cursor."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Connection.execute was used")

    with monkeypatch.context() as patch:
        patch.setattr(sa.Connection, "execute", refuse)
        yield


async def test_rows_are_typed_as_sqlalchemy_reads_them(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await db.write(lambda conn: conn.execute(probes.insert(), [row("a", note="x\x00y"), row("b")]))
    expected = await db.read(lambda conn: conn.execute(BY_ID.statement, {"probe_id": "a"}).one())

    with no_connection_execute(monkeypatch):
        got = await db.read(lambda conn: BY_ID.one(conn, {"probe_id": "a"}))
        listed = await db.read(lambda conn: ALL.rows(conn, {}))
        missing = await db.read(lambda conn: BY_ID.first(conn, {"probe_id": "zz"}))

    assert tuple(got) == tuple(expected)
    assert got.seen_at == SEEN
    assert got.body == {"a": [1, "ü"]}
    assert got.note == "x\ufffdy"  # the bind processor ran on the way in
    assert got.live is True
    assert [(r.id, r.n) for r in listed] == [("a", 0), ("b", 0)]
    assert missing is None


async def test_writes_bind_defaults_and_count_rows(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with no_connection_execute(monkeypatch):
        await db.write(lambda conn: INSERT.run_many(conn, [row("a"), row("b", live=False)]))
        counts = await db.write(
            lambda conn: BUMP.scalar_one(conn, {"probe_id": "a", **new_values({"note": "n"})})
        )
        changed = await db.write(
            lambda conn: Prebuilt(probes.delete().where(probes.c.live.is_(False))).run(conn, {})
        )
    stored = await db.read(lambda conn: conn.execute(sa.select(probes)).all())
    assert counts == 1
    assert changed == 1
    assert [(r.id, r.count, r.seen_at, r.note) for r in stored] == [("a", 1, None, "n")]


async def test_driver_errors_surface_as_sqlalchemy_errors(db: Database) -> None:
    await db.write(lambda conn: INSERT.run(conn, row("a")))
    with pytest.raises(sa.exc.IntegrityError):
        await db.write(lambda conn: INSERT.run(conn, row("a")))
    with pytest.raises(sa.exc.InvalidRequestError, match="probe_id"):
        await db.read(lambda conn: BY_ID.one(conn, {}))
    with pytest.raises(sa.exc.NoResultFound):
        await db.read(lambda conn: BY_ID.one(conn, {"probe_id": "zz"}))
    # The failed transaction left nothing behind, and the connection still works.
    assert await db.read(lambda conn: BY_ID.scalar(conn, {"probe_id": "a"})) == "a"


async def test_statements_needing_more_of_sqlalchemy_go_through_it(db: Database) -> None:
    """IN lists expanded at execution and Python-side defaults are SQLAlchemy's to fill in."""
    await db.write(lambda conn: INSERT.run_many(conn, [row("a"), row("b"), row("c")]))
    some = Prebuilt(
        sa.select(probes.c.id)
        .where(probes.c.id.in_(sa.bindparam("ids", expanding=True)))
        .order_by(probes.c.id)
    )
    assert await db.read(lambda conn: some.scalars(conn, {"ids": ["a", "c"]})) == ["a", "c"]

    await db.write(lambda conn: Prebuilt(defaulted.insert()).run(conn, {"id": "d"}))
    labels = await db.read(lambda conn: conn.execute(sa.select(defaulted.c.label)).scalars().all())
    assert labels == ["python-side"]


async def test_many_rows_go_in_with_one_statement_that_returns_some(db: Database) -> None:
    """What a statement returns is dropped when it runs once per row (`run_many`)."""
    returning = Prebuilt(probes.insert().returning(probes.c.id))
    await db.write(lambda conn: returning.run_many(conn, [row("a"), row("b")]))
    assert await db.read(lambda conn: ALL.scalars(conn, {})) == ["a", "b"]


async def test_statement_listeners_see_every_statement(db: Database) -> None:
    """With a `before_cursor_execute` listener (a statement counter, say), prebuilt statements
    go through `Connection.execute` and the listener sees them."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        await db.read(lambda conn: BY_ID.first(conn, {"probe_id": "a"}))
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    assert any("prebuilt_probes" in statement for statement in seen)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.asyncpg.dialect()])
def test_every_prebuilt_statement_of_the_store_runs_on_the_driver(dialect: sa.Dialect) -> None:
    """None of the statements every task runs needs `Connection.execute` (an IN list it would
    expand, a Python-side default it would fill in): `one_of` spells a fixed IN list."""
    for url in ("sqlite://", "postgresql+asyncpg://"):
        jobs_module._claimable(Dialect(url).claiming, (TURN_JOB, "mail", "webhook"))
        tasks_module._locked_task_by_id(Dialect(url).locking)
    prebuilt = [
        statement
        for module in (importlib.import_module(name) for name in STORE_MODULES)
        for statement in vars(module).values()
        if isinstance(statement, Prebuilt)
    ]
    prebuilt += [item for item in gc.get_objects() if isinstance(item, Prebuilt)]
    assert len({id(statement) for statement in prebuilt}) > 30
    needing_more = [
        str(statement.statement)
        for statement in prebuilt
        if _compile(statement.statement, dialect, _every_column(statement.statement)) is None
    ]
    assert needing_more == []


def _every_column(statement: sa.Executable) -> dict[str, None]:
    """An INSERT's parameters, one per column (what the store's inserts pass); none otherwise."""
    if isinstance(statement, sa.Insert):
        return {column.key: None for column in statement.table.columns}
    return {}
