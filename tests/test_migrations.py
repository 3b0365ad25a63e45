"""Migrations: they build exactly the tables the code declares, and HEAD names the newest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from conftest import FakeClock
from databases import empty_postgres_url, sqlite_url
from kennel.models import Worker
from kennel.storage import Database, Store, migrate
from kennel.storage.migrate import HEAD, alembic_config, current_revision
from kennel.storage.tables import jobs, metadata
from records import stored_worker, submission


def test_head_names_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


async def test_a_migrated_database_is_at_head_and_matches_the_tables(store: Store) -> None:
    assert await current_revision(store.database) == HEAD

    def differences(sync: sa.Connection) -> list[object]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    assert await store.database.read(differences) == []


async def test_migrating_again_changes_nothing(store: Store) -> None:
    await store.migrate()
    assert await current_revision(store.database) == HEAD


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    async with empty_postgres_url() as url:
        yield url


_DELIVERY = sa.text(
    "INSERT INTO webhook_deliveries (id, worker_id, organization_id, task_key, turn_id, "
    "event_type, body, status, attempts, next_attempt_at, lease_owner, lease_expires_at, "
    "created_at) VALUES (:id, :worker_id, :organization_id, :task_key, :turn_id, "
    "'task.completed', NULL, :status, :attempts, :due, :owner, :expires, :created)"
)
_MAIL = sa.text(
    "INSERT INTO email_outbox (id, kind, worker_id, recipient, subject, in_reply_to, "
    '"references", body, files, status, attempts, next_attempt_at, lease_owner, '
    "lease_expires_at, last_error, created_at) VALUES (:id, 'bounce', :worker_id, "
    "'ada@example.com', 'Hi', NULL, '', 'No.', '[]', :status, :attempts, :due, :owner, "
    ":expires, :error, :created)"
)


async def test_waiting_deliveries_and_mails_move_into_the_queue(
    empty_url: str, clock: FakeClock
) -> None:
    """0010 on a database where deliveries and mails wait (one mid-attempt) and others are
    finished: the waiting ones become queued jobs, the finished ones stay out of the queue."""
    database = Database(empty_url)
    store = Store(database)
    try:
        await migrate(database, "0009")
        worker = await stored_worker(store, clock)
        task_key, turn_id = await _task(store, worker, clock)
        millis = int(clock.now().timestamp() * 1000)
        common = {"worker_id": worker.id, "created": millis, "due": millis + 60_000}
        hook = {**common, "organization_id": worker.organization_id, "task_key": task_key}
        hook["turn_id"] = turn_id
        leased = {"owner": "gone:1", "expires": millis + 30_000}
        free = {"owner": None, "expires": None}

        def old_rows(conn: sa.Connection) -> None:
            conn.execute(
                _DELIVERY, {**hook, **free, "id": "msg_wait", "status": "pending"} | {"attempts": 2}
            )
            conn.execute(
                _DELIVERY,
                {**hook, **leased, "id": "msg_mid", "status": "delivering"} | {"attempts": 3},
            )
            conn.execute(
                _DELIVERY,
                {**hook, **free, "id": "msg_done", "status": "delivered"} | {"attempts": 1},
            )
            conn.execute(
                _MAIL,
                {
                    **common,
                    **free,
                    "id": "eml_wait",
                    "status": "pending",
                    "attempts": 1,
                    "error": "421 busy",
                },
            )
            conn.execute(
                _MAIL,
                {
                    **common,
                    **leased,
                    "id": "eml_mid",
                    "status": "sending",
                    "attempts": 8,
                    "error": None,
                },
            )
            conn.execute(
                _MAIL,
                {
                    **common,
                    **free,
                    "id": "eml_done",
                    "status": "failed",
                    "attempts": 8,
                    "error": "550 no",
                },
            )

        await database.write(old_rows)
        await migrate(database)

        query = (
            sa.select(jobs.c.kind, jobs.c.ref, jobs.c.status, jobs.c.attempts, jobs.c.max_attempts)
            .add_columns(jobs.c.last_error, jobs.c.run_after)
            .where(jobs.c.kind != "turn")
            .order_by(jobs.c.ref)
        )
        moved = await database.read(lambda conn: [tuple(row) for row in conn.execute(query)])
        due = clock.now() + timedelta(seconds=60)
        assert moved == [
            ("mail", "eml_mid", "queued", 7, 9, None, due),
            ("mail", "eml_wait", "queued", 1, 8, "421 busy", due),
            ("webhook", "msg_mid", "queued", 2, 8, None, due),
            ("webhook", "msg_wait", "queued", 2, 8, None, due),
        ]

        def columns(conn: sa.Connection, table: str) -> set[str]:
            return {column["name"] for column in sa.inspect(conn).get_columns(table)}

        for table in ("webhook_deliveries", "email_outbox"):
            left = await database.read(lambda conn, table=table: columns(conn, table))
            assert not left & {"status", "attempts", "next_attempt_at", "lease_owner"}

        await store.webhooks.set_url(worker.id, "https://hooks.example/", "whk_t", clock.now())
        clock.advance(60)
        claimed = await store.jobs.claim(["webhook"], "r1", 10, clock.now(), timedelta(seconds=30))
        deliveries = [await store.webhooks.delivery(job) for job in claimed]
        assert sorted((d.id, d.attempt) for d in deliveries if d) == [
            ("msg_mid", 3),
            ("msg_wait", 3),
        ]
    finally:
        await store.close()


async def _task(store: Store, worker: Worker, clock: FakeClock) -> tuple[int, str]:
    stored = await store.tasks.submit(
        submission(worker, "tsk_old"), clock.now(), lambda _task: None
    )
    task, turn = stored.task, stored.turn
    return task.key, turn.id
