"""Storage contract: every test runs against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import FakeClock
from kennel.errors import ConflictError, LeaseLostError
from kennel.models import (
    AttachedFile,
    Event,
    Task,
    TaskStatus,
    TurnError,
    TurnOutcome,
    Usage,
    Visibility,
    WorkspaceFile,
)
from kennel.models.jobs import Claimant, TurnJob
from kennel.storage import WATCH_SECONDS, Database, Store, Wakeups
from kennel.storage import wakeups as wakeups_module
from kennel.storage.sqlite import sqlite_engine
from records import claim_turns, stored_worker, submission, worker_record

LEASE = timedelta(seconds=30)


async def _member(store: Store, clock: FakeClock, email: str = "ada@example.com"):
    return await store.auth.ensure_member("acme", email, clock.now())


def _accept(task: Task) -> None:
    return None


async def test_members_and_keys(store: Store, clock: FakeClock) -> None:
    org, user = await _member(store, clock)
    again_org, again_user = await _member(store, clock)
    assert (again_org.id, again_user.id) == (org.id, user.id)
    _, other = await _member(store, clock, "bob@example.com")
    assert other.id != user.id and other.organization_id == org.id

    key_id = await store.auth.create_api_key(user, "a" * 64, "hdg_abcd", clock.now())
    principal = await store.auth.principal_for("a" * 64)
    assert principal is not None
    assert (principal.organization_id, principal.user_id, principal.key_id) == (
        org.id,
        user.id,
        key_id,
    )
    assert await store.auth.principal_for("b" * 64) is None
    assert await store.auth.count_api_keys() == 1


async def test_worker_update_distinguishes_absent_and_null(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock, output_schema={"type": "object"})
    clock.advance(5)
    updated = await store.workers.update(
        worker.organization_id, worker.id, {"title": "Fido"}, clock.now()
    )
    assert updated is not None
    assert updated.title == "Fido" and updated.output_schema == {"type": "object"}
    assert updated.updated_at > worker.updated_at
    cleared = await store.workers.update(
        worker.organization_id, worker.id, {"output_schema": None}, clock.now()
    )
    assert cleared is not None and cleared.output_schema is None


async def test_deleted_worker_is_gone_but_kept(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    assert await store.workers.delete(worker.organization_id, worker.id, clock.now())
    assert await store.workers.get(worker.organization_id, worker.id) is None
    assert not await store.workers.delete(worker.organization_id, worker.id, clock.now())
    assert (
        await store.workers.update(worker.organization_id, worker.id, {"title": "x"}, clock.now())
        is None
    )


async def test_private_workers_are_listed_only_to_their_creator(
    store: Store, clock: FakeClock
) -> None:
    org, ada = await _member(store, clock)
    _, bob = await _member(store, clock, "bob@example.com")
    public = worker_record(org.id, ada.id, clock)
    private = worker_record(org.id, ada.id, clock, visibility=Visibility.PRIVATE)
    for worker in (public, private):
        await store.workers.create(worker)
    ada_sees, ada_total = await store.workers.list_visible(org.id, ada.id, offset=0, limit=50)
    bob_sees, bob_total = await store.workers.list_visible(org.id, bob.id, offset=0, limit=50)
    assert {w.id for w in ada_sees} == {public.id, private.id} and ada_total == 2
    assert [w.id for w in bob_sees] == [public.id] and bob_total == 1


async def test_submit_creates_task_turn_and_queued_job(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    stored = await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)
    task, turn, seq = stored.task, stored.turn, stored.events_after
    assert (task.id, task.status, turn.seq, seq) == ("tsk_1", TaskStatus.PENDING, 0, 0)

    stored = await store.tasks.submit(
        submission(worker, "tsk_1", "and then?"), clock.now(), _accept
    )
    follow_task, follow = stored.task, stored.turn
    assert follow_task.key == task.key and follow.seq == 1
    snapshot = await store.tasks.snapshot(task.key)
    assert [t.input for t in snapshot.turns] == ["hello", "and then?"]
    assert snapshot.task.totals.turn_count == 2


async def test_submit_refused_by_the_rule_stores_nothing(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    task = (await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)).task

    def refuse(existing: Task) -> None:
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), refuse)
    assert len((await store.tasks.snapshot(task.key)).turns) == 1


async def test_task_ids_are_per_organization(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    other_org, other_user = await store.auth.ensure_member("globex", "x@globex.com", clock.now())
    other_worker = worker_record(other_org.id, other_user.id, clock)
    await store.workers.create(other_worker)
    mine = (await store.tasks.submit(submission(worker, "tsk_same"), clock.now(), _accept)).task
    theirs = (
        await store.tasks.submit(submission(other_worker, "tsk_same"), clock.now(), _accept)
    ).task
    assert mine.key != theirs.key
    assert (await store.tasks.get(worker.organization_id, "tsk_same")).key == mine.key


async def test_racing_submissions_of_one_new_task_id_become_two_turns(
    store: Store, clock: FakeClock
) -> None:
    worker = await stored_worker(store, clock)
    results = await asyncio.gather(
        *(
            store.tasks.submit(submission(worker, "tsk_race"), clock.now(), _accept)
            for _ in range(4)
        )
    )
    assert len({stored.task.key for stored in results}) == 1
    assert sorted(stored.turn.seq for stored in results) == [0, 1, 2, 3]


async def test_turns_of_one_task_are_claimed_strictly_in_order(
    store: Store, clock: FakeClock
) -> None:
    worker = await stored_worker(store, clock)
    first = (await store.tasks.submit(submission(worker, "tsk_a"), clock.now(), _accept)).turn
    second = (await store.tasks.submit(submission(worker, "tsk_a"), clock.now(), _accept)).turn
    other = (await store.tasks.submit(submission(worker, "tsk_b"), clock.now(), _accept)).turn

    claimed = await claim_turns(store, "r1", 10, clock.now(), LEASE)
    assert [job.turn_id for job in claimed] == [first.id, other.id]
    assert await claim_turns(store, "r1", 10, clock.now(), LEASE) == []

    job = claimed[0]
    await store.runs.finish_turn(
        job, TurnOutcome(status=TaskStatus.COMPLETED, output_text="hi"), [], clock.now()
    )
    again = await claim_turns(store, "r1", 10, clock.now(), LEASE)
    assert [job.turn_id for job in again] == [second.id]


async def test_a_submission_with_a_claimant_is_stored_as_its_claim(
    store: Store, clock: FakeClock
) -> None:
    """The job is stored as a claim leaves it (first attempt, leased to the claimant, turn and
    task running) and its run writes under that lease; a follow-up queued behind it waits."""
    worker = await stored_worker(store, clock)
    claimant = Claimant("r1", LEASE)
    stored = await store.tasks.submit(
        submission(worker, "tsk_1", claimant=claimant), clock.now(), _accept
    )
    assert stored.job is not None and stored.job.attempts == 1
    assert stored.turn.status is TaskStatus.RUNNING
    assert (await store.tasks.get_turn(stored.turn.id)).status is TaskStatus.RUNNING
    snapshot = await store.tasks.snapshot(stored.task.key)
    assert snapshot.task.status is TaskStatus.RUNNING
    assert await claim_turns(store, "r2", 10, clock.now(), LEASE) == []  # already held

    job = TurnJob(stored.job, stored.task.key)
    assert await store.runs.append_events(job, ['{"type":"start"}'], clock.now(), LEASE) == 1
    follow = await store.tasks.submit(
        submission(worker, "tsk_1", "more", claimant=claimant), clock.now(), _accept
    )
    assert follow.job is None and follow.turn.status is TaskStatus.PENDING
    await store.runs.finish_turn(job, TurnOutcome(status=TaskStatus.COMPLETED), [], clock.now())
    [queued] = await claim_turns(store, "r2", 10, clock.now(), LEASE)
    assert queued.turn_id == follow.turn.id

    clock.advance(LEASE.total_seconds() + 1)  # a claimant that dies: its lease runs out
    lost = await store.tasks.submit(
        submission(worker, "tsk_2", claimant=claimant), clock.now(), _accept
    )
    clock.advance(LEASE.total_seconds() + 1)
    assert {expired.ref for expired in await store.jobs.expired(clock.now())} >= {lost.turn.id}


async def test_events_are_sequenced_per_task_and_fenced(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    stored = await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)
    task, turn = stored.task, stored.turn
    [job] = await claim_turns(store, "r1", 1, clock.now(), LEASE)
    assert job.task_key == task.key and job.attempts == 1
    assert await store.runs.append_events(job, ['{"type":"start"}'], clock.now(), LEASE) == 1
    assert await store.runs.append_events(job, ["{}", "{}"], clock.now(), LEASE) == 3
    events, ended = await store.events.news(task.key, 1, turn.id)
    assert [e.seq for e in events] == [2, 3] and {e.turn_id for e in events} == {turn.id}
    assert not ended
    assert (await store.tasks.get_turn(turn.id)).first_event_seq == 1

    clock.advance(31)
    [expired] = await store.jobs.expired(clock.now())
    assert await store.jobs.requeue(
        expired, clock.now(), "lease expired", strikes=0, interruptions=1
    )
    with pytest.raises(LeaseLostError):
        await store.runs.append_events(job, ["{}"], clock.now(), LEASE)
    with pytest.raises(LeaseLostError):
        await store.runs.finish_turn(job, TurnOutcome(status=TaskStatus.COMPLETED), [], clock.now())
    [retry] = await claim_turns(store, "r2", 1, clock.now(), LEASE)
    # An interruption is not the turn's own failure: it spends no attempt.
    assert retry.turn_id == turn.id and retry.attempts == 1
    assert not await store.jobs.requeue(expired, clock.now(), "stale", strikes=0, interruptions=1)


async def test_news_say_whether_the_turn_or_task_had_ended_before_its_last_events(
    store: Store, clock: FakeClock
) -> None:
    worker = await stored_worker(store, clock)
    stored = await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)
    task, turn = stored.task, stored.turn
    [job] = await claim_turns(store, "r1", 1, clock.now(), LEASE)
    await store.runs.append_events(job, ['{"type":"start"}'], clock.now(), LEASE)
    assert await store.events.news(task.key, 0, turn.id) == (
        [Event(1, turn.id, '{"type":"start"}')],
        False,
    )
    assert (await store.events.news(task.key, 0, None))[1] is False
    outcome = TurnOutcome(status=TaskStatus.COMPLETED)
    await store.runs.finish_turn(job, outcome, ['{"type":"finish"}'], clock.now())
    events, ended = await store.events.news(task.key, 1, turn.id)
    assert ended and [event.body for event in events] == ['{"type":"finish"}']
    assert (await store.events.news(task.key, 2, None)) == ([], True)
    # A read cut by its limit does not have the last events, even of a turn that has ended.
    events, last = await store.events.news(task.key, 0, turn.id, limit=1)
    assert len(events) == 1 and not last
    assert (await store.events.news(task.key, 0, "trn_gone"))[
        1
    ]  # no such turn: nothing to wait for


async def test_finish_records_outcome_totals_and_bills(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    await store.auth.set_credit_balance(worker.organization_id, 100)
    task = (await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)).task
    [job] = await claim_turns(store, "r1", 1, clock.now(), LEASE)
    outcome = TurnOutcome(
        status=TaskStatus.COMPLETED,
        output_text="done",
        structured_output={"a": 1},
        usage=Usage(input_tokens=1500, output_tokens=20, requests=1, tool_calls=0, credits=2),
        duration_ms=1234,
        model_messages=b"[]",
        ui_message={"id": "m", "role": "assistant", "parts": []},
    )
    clock.advance(2)
    await store.runs.finish_turn(job, outcome, ['{"type":"finish"}'], clock.now(), title="Greeting")
    snapshot = await store.tasks.snapshot(task.key)
    stored = snapshot.turns[0]
    assert (stored.status, stored.output_text, stored.structured_output) == (
        TaskStatus.COMPLETED,
        "done",
        {"a": 1},
    )
    assert stored.usage.input_tokens == 1500 and stored.usage.credits == 2
    assert stored.completed_at == clock.now() and stored.ui_message["id"] == "m"
    assert snapshot.task.status is TaskStatus.COMPLETED and snapshot.task.title == "Greeting"
    assert snapshot.task.totals.credits == 2 and snapshot.task.totals.duration_ms == 1234
    assert snapshot.event_seq == 1
    assert (await store.auth.get_organization(worker.organization_id)).credit_balance == 98


async def test_follow_up_sees_completed_history(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)
    [job] = await claim_turns(store, "r1", 1, clock.now(), LEASE)
    await store.runs.finish_turn(
        job, TurnOutcome(status=TaskStatus.COMPLETED, model_messages=b"[1]"), [], clock.now()
    )
    await store.tasks.submit(submission(worker, "tsk_1", "more"), clock.now(), _accept)
    [job] = await claim_turns(store, "r1", 1, clock.now(), LEASE)
    context = await store.runs.load_context(job.turn_id)
    assert context.turn.input == "more" and context.history == [b"[1]"]
    assert context.worker.id == worker.id and context.task.status is TaskStatus.RUNNING


async def test_giving_up_on_an_interrupted_turn(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    task = (await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)).task
    await claim_turns(store, "r1", 1, clock.now(), LEASE)
    [expired] = await store.jobs.expired(clock.now(), every_running=True)
    failed = TurnOutcome(
        status=TaskStatus.ERROR, error=TurnError("interrupted", "the server stopped")
    )
    assert await store.runs.fail_turn(expired.claim(), failed, ['{"type":"error"}'], clock.now())
    assert not await store.runs.fail_turn(expired.claim(), failed, [], clock.now())
    snapshot = await store.tasks.snapshot(task.key)
    assert snapshot.task.status is TaskStatus.ERROR
    assert snapshot.turns[0].error == TurnError("interrupted", "the server stopped")
    assert await claim_turns(store, "r1", 1, clock.now(), LEASE) == []


async def test_task_files_are_recorded_with_the_turn(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    report = WorkspaceFile("docs/report.md", 12, "text/markdown", clock.now())
    task = (
        await store.tasks.submit(submission(worker, "tsk_1", files=(report,)), clock.now(), _accept)
    ).task
    bigger = replace(report, size=40)
    await store.tasks.submit(submission(worker, "tsk_1", files=(bigger,)), clock.now(), _accept)
    assert (await store.tasks.snapshot(task.key)).files == [bigger]
    assert await store.files.get(worker.id, "docs/report.md") == bigger
    assert await store.files.get(worker.id, "nope") is None


async def test_each_turn_keeps_the_files_handed_in_with_it(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    report = WorkspaceFile("docs/report.md", 12, "text/markdown", clock.now())
    stored = await store.tasks.submit(
        submission(worker, "tsk_1", files=(report,)), clock.now(), _accept
    )
    task, first = stored.task, stored.turn
    bigger = replace(report, size=40)
    data = WorkspaceFile("data.csv", 7, "text/csv", clock.now())
    second = (
        await store.tasks.submit(
            submission(worker, "tsk_1", files=(bigger, data)), clock.now(), _accept
        )
    ).turn
    third = (await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)).turn
    sent = AttachedFile("docs/report.md", "text/markdown", 12)
    assert first.attachments == (sent,)
    expected = [
        (sent,),
        (replace(sent, size=40), AttachedFile("data.csv", "text/csv", 7)),
        (),
    ]
    snapshot = await store.tasks.snapshot(task.key)
    assert [turn.attachments for turn in snapshot.turns] == expected
    assert (await store.tasks.get_turn(second.id)) == snapshot.turns[1]
    [job] = await claim_turns(store, "r1", 1, clock.now(), LEASE)
    assert (await store.runs.load_context(job.turn_id)).turn.attachments == expected[0]
    assert third.attachments == ()


async def test_listing_tasks_hides_archived_and_filters(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    kept = (await store.tasks.submit(submission(worker, "tsk_1"), clock.now(), _accept)).task
    clock.advance(1)
    gone = (await store.tasks.submit(submission(worker, "tsk_2"), clock.now(), _accept)).task
    await store.tasks.archive(gone.key, clock.now())
    listed, total = await store.tasks.list_visible(
        worker.organization_id, worker.user_id, worker_id=None, status=None, offset=0, limit=50
    )
    assert [t.id for t in listed] == ["tsk_1"] and total == 1
    none, total = await store.tasks.list_visible(
        worker.organization_id,
        worker.user_id,
        worker_id=worker.id,
        status=TaskStatus.COMPLETED,
        offset=0,
        limit=50,
    )
    assert none == [] and total == 0
    assert (await store.tasks.get(worker.organization_id, "tsk_2")).archived_at is not None
    assert (await store.tasks.latest_for_worker(worker.organization_id, worker.id)).key == kept.key


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_concurrent_claimers_never_share_a_job(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    for number in range(40):
        await store.tasks.submit(submission(worker, f"tsk_{number}"), clock.now(), _accept)
    batches = await asyncio.gather(
        *(claim_turns(store, f"r{n}", 7, clock.now(), LEASE) for n in range(8))
    )
    claimed = [job.turn_id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 40


async def test_commits_wake_waiters_in_every_process(store: Store, database_url: str) -> None:
    """On PostgreSQL through LISTEN/NOTIFY (a second Database stands for another process)."""
    other = Database(database_url)
    await other.start_listening()
    try:
        with (
            other.wakeups.subscribe("task:42") as remote,
            store.database.wakeups.subscribe("task:42") as local,
        ):
            await store.database.write(lambda conn: store.database.publish(conn, "task:42"))
            assert await local.wait(5)
            if not store.database.dialect.sole_process:
                assert await remote.wait(5)
            assert not await local.wait(0.05)
    finally:
        await other.close()


async def test_a_reader_in_another_process_is_seen_watching_for_a_while(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader elsewhere says it watches a topic (PostgreSQL's NOTIFY; one SQLite process has
    no elsewhere); it counts for two `WATCH_SECONDS` after it last said so."""
    other = Database(database_url)
    await other.start_listening()
    wakeups = other.wakeups
    try:
        await store.database.say_watching("task:42")
        if not store.database.dialect.sole_process:
            async with asyncio.timeout(5):
                while not wakeups.is_watched("task:42"):
                    await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(0.1)
            assert not wakeups.is_watched("task:42")
        assert not wakeups.is_watched("task:43")
        with wakeups.subscribe("task:43"):
            assert wakeups.is_watched("task:43")
        assert not wakeups.is_watched("task:43")

        later = time.monotonic() + 2 * WATCH_SECONDS
        monkeypatch.setattr(wakeups_module.time, "monotonic", lambda: later)
        assert not wakeups.is_watched("task:42")
    finally:
        await other.close()


def test_readers_gone_elsewhere_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """What other processes said they watch is kept only while it counts: a server that saw
    many readers come and go does not keep them all."""
    now = [1000.0]
    monkeypatch.setattr(wakeups_module.time, "monotonic", lambda: now[0])
    wakeups = Wakeups()
    for key in range(100):
        wakeups._on_notification(None, 0, "kennel", f"watching:task:{key}")
    now[0] += 2 * WATCH_SECONDS
    wakeups._on_notification(None, 0, "kennel", "watching:task:100")

    assert list(wakeups._watched_elsewhere) == ["task:100"]
    assert wakeups.is_watched("task:100") and not wakeups.is_watched("task:1")


async def test_a_process_leaves_its_own_notifications_alone() -> None:
    """Its waiters were woken when its transaction committed: the echo from PostgreSQL would
    only wake them again (a runner would claim twice)."""
    here, there = Wakeups(), Wakeups()
    with here.subscribe("jobs") as waiter:
        here._on_notification(None, 0, "kennel", here.payload(["jobs"]))
        assert not await waiter.wait(0)
        here._on_notification(None, 0, "kennel", there.payload(["jobs", "task:1"]))
        assert await waiter.wait(0)
        here._on_notification(None, 0, "kennel", "jobs")  # a process that names none
        assert await waiter.wait(0)


async def test_a_rolled_back_transaction_wakes_nobody(store: Store) -> None:
    with store.database.wakeups.subscribe("jobs") as waiter:

        def work(conn: sa.Connection) -> None:
            store.database.publish(conn, "jobs")
            raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await store.database.write(work)
        assert not await waiter.wait(0.2)


def test_a_writer_that_cannot_take_the_sqlite_write_lock_gets_sqlalchemys_error(
    tmp_path: Path,
) -> None:
    """BEGIN IMMEDIATE runs on the driver; its failure still surfaces as SQLAlchemy's
    `OperationalError`, as every other statement's does."""
    url = sa.engine.make_url(f"sqlite:///{tmp_path / 'locked.db'}")
    engine = sqlite_engine(url, pool_size=1, begin="BEGIN IMMEDIATE")
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        with engine.connect() as conn:
            conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=50")  # type: ignore[union-attr]
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                conn.begin()
        holder.execute("ROLLBACK")
        with engine.begin() as conn:  # the lock is free again: the writer takes it
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        holder.close()
        engine.dispose()
