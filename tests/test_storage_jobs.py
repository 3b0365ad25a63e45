"""Storage contract of the queue, on SQLite and PostgreSQL, for every kind of job: claiming,
leases and their heartbeat, fencing a stale writer, settling, retrying with backoff, and the
final failure once the attempts are spent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import FakeClock
from kennel.errors import LeaseLostError
from kennel.models import TaskStatus, Worker
from kennel.models.jobs import MAIL_JOB, TURN_JOB, WEBHOOK_JOB, DeliveryAttempts, Job
from kennel.models.mail import Bounce
from kennel.services.jobs import Attempt, Jobs
from kennel.storage import Store
from kennel.storage.jobs import fence
from kennel.storage.tables import jobs
from kennel.storage.webhooks import queue_delivery
from records import stored_worker, submission

LEASE = timedelta(seconds=30)
MAX_ATTEMPTS = 3
KINDS = [TURN_JOB, WEBHOOK_JOB, MAIL_JOB]

Enqueue = Callable[[], Awaitable[str]]
"""Queues one job of the kind under test, with the row it works on; returns its ref."""


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def queue(store: Store) -> Store:
    """The store, queueing deliveries with `MAX_ATTEMPTS` attempts like turns."""
    return Store(store.database, DeliveryAttempts(webhook=MAX_ATTEMPTS, mail=MAX_ATTEMPTS))


@pytest.fixture
async def enqueue(queue: Store, clock: FakeClock, kind: str) -> Enqueue:
    worker = await stored_worker(queue, clock)
    await queue.webhooks.set_url(worker.id, "https://hooks.example/", "whk_t", clock.now())
    makers = {TURN_JOB: _turn, WEBHOOK_JOB: _delivery, MAIL_JOB: _mail}

    async def make() -> str:
        return await makers[kind](queue, worker, clock)

    return make


async def _turn(store: Store, worker: Worker, clock: FakeClock) -> str:
    turn = (
        await store.tasks.submit(
            submission(worker, max_attempts=MAX_ATTEMPTS), clock.now(), lambda _task: None
        )
    ).turn
    return turn.id


async def _delivery(store: Store, worker: Worker, clock: FakeClock) -> str:
    turn_id = await _turn(store, worker, clock)
    task_key = (await store.tasks.get_turn(turn_id)).task_key

    def work(conn: sa.Connection) -> str:
        # The turn's own job is done with: only the delivery waits.
        conn.execute(jobs.delete().where(jobs.c.ref == turn_id))
        now = clock.now()
        assert queue_delivery(conn, task_key, turn_id, TaskStatus.COMPLETED, now, MAX_ATTEMPTS)
        query = sa.select(jobs.c.ref).where(jobs.c.kind == WEBHOOK_JOB).order_by(jobs.c.id.desc())
        return str(conn.execute(query).scalar())

    return await store.database.write(work)


async def _mail(store: Store, worker: Worker, clock: FakeClock) -> str:
    bounce = Bounce(worker.id, "someone@example.com", "Hi", None, (), "No, thanks.")
    await store.mail.queue_bounce(bounce, clock.now())
    query = sa.select(jobs.c.ref).where(jobs.c.kind == MAIL_JOB).order_by(jobs.c.id.desc())
    return str(await store.database.read(lambda conn: conn.execute(query).scalar()))


async def _row(store: Store, job: Job) -> Any:
    query = sa.select(jobs.c.status, jobs.c.attempts, jobs.c.last_error, jobs.c.run_after)
    return await store.database.read(
        lambda conn: conn.execute(query.where(jobs.c.id == job.job_id)).one()
    )


async def test_a_due_job_is_claimed_once(
    queue: Store, clock: FakeClock, kind: str, enqueue: Enqueue
) -> None:
    ref = await enqueue()
    [job] = await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE)
    assert (job.kind, job.ref, job.attempts, job.max_attempts) == (kind, ref, 1, MAX_ATTEMPTS)
    assert await queue.jobs.claim(KINDS, "r2", 10, clock.now(), LEASE) == []
    assert (await _row(queue, job)).status == "running"
    others = [other for other in KINDS if other != kind]
    await enqueue()
    assert await queue.jobs.claim(others, "r3", 10, clock.now(), LEASE) == []  # not its kinds


async def test_concurrent_claimers_never_share_a_job(
    queue: Store, clock: FakeClock, enqueue: Enqueue
) -> None:
    refs = {await enqueue() for _ in range(12)}
    batches = await asyncio.gather(
        *(queue.jobs.claim(KINDS, f"r{n}", 5, clock.now(), LEASE) for n in range(4))
    )
    claimed = [job.ref for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 12 and set(claimed) == refs


async def test_an_expired_lease_puts_the_job_back_without_spending_an_attempt(
    queue: Store, clock: FakeClock, enqueue: Enqueue
) -> None:
    await enqueue()
    [job] = await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE)
    assert await queue.jobs.expired(clock.now()) == []
    clock.advance(31)
    [expired] = await queue.jobs.expired(clock.now())
    assert (expired.job_id, expired.lease_token) == (job.job_id, job.lease_token)
    assert await queue.jobs.requeue(expired, clock.now(), "gone", strikes=0, interruptions=1)
    assert not await queue.jobs.requeue(expired, clock.now(), "gone", strikes=0, interruptions=1)
    [again] = await queue.jobs.claim(KINDS, "r2", 10, clock.now(), LEASE)
    assert (again.job_id, again.attempts) == (job.job_id, 1)


async def test_a_clean_stop_hands_jobs_back_without_spending_an_attempt(
    queue: Store, clock: FakeClock, enqueue: Enqueue
) -> None:
    await enqueue()
    await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE)
    assert await queue.jobs.release("r2") == 0  # not its jobs
    assert await queue.jobs.release("r1") == 1
    [again] = await queue.jobs.claim(KINDS, "r2", 10, clock.now(), LEASE)
    assert again.attempts == 1


async def test_the_heartbeat_extends_the_lease(
    queue: Store, clock: FakeClock, enqueue: Enqueue
) -> None:
    await enqueue()
    await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE)
    clock.advance(20)
    await queue.jobs.extend_leases("r1", clock.now(), LEASE)
    await queue.jobs.extend_leases("r2", clock.now(), timedelta(0))  # another runner's beat
    clock.advance(20)
    assert await queue.jobs.expired(clock.now()) == []
    clock.advance(11)
    assert len(await queue.jobs.expired(clock.now())) == 1


async def test_a_stale_writer_is_fenced(queue: Store, clock: FakeClock, enqueue: Enqueue) -> None:
    await enqueue()
    [stale] = await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE)
    clock.advance(31)
    [expired] = await queue.jobs.expired(clock.now())
    await queue.jobs.requeue(expired, clock.now(), "gone", strikes=0, interruptions=1)
    [current] = await queue.jobs.claim(KINDS, "r2", 10, clock.now(), LEASE)

    with pytest.raises(LeaseLostError):
        await queue.database.write(lambda conn: fence(conn, stale, progressed_at=clock.now()))
    assert not await queue.jobs.conclude(stale, clock.now(), None, None)
    assert (await _row(queue, current)).status == "running"
    assert await queue.jobs.conclude(current, clock.now(), None, None)
    assert (await _row(queue, current)).status == "done"


async def test_a_settled_job_is_done(queue: Store, clock: FakeClock, enqueue: Enqueue) -> None:
    await enqueue()
    [job] = await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE)
    assert await queue.jobs.waiting(KINDS) == 1
    assert await queue.jobs.conclude(job, clock.now(), None, None)
    assert not await queue.jobs.conclude(job, clock.now(), None, None)  # once
    assert await queue.jobs.waiting(KINDS) == 0
    clock.advance(3600)
    assert await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE) == []
    assert await queue.jobs.expired(clock.now(), every_running=True) == []


async def test_a_failed_attempt_is_due_again_after_its_backoff(
    queue: Store, clock: FakeClock, enqueue: Enqueue
) -> None:
    await enqueue()
    [job] = await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE)
    retry_at = clock.now() + timedelta(seconds=60)
    assert await queue.jobs.conclude(job, clock.now(), "it broke", retry_at)
    row = await _row(queue, job)
    assert (row.status, row.attempts, row.last_error) == ("queued", 1, "it broke")
    assert await queue.jobs.next_due(KINDS) == retry_at
    assert await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE) == []
    clock.advance(60)
    [again] = await queue.jobs.claim(KINDS, "r1", 10, clock.now(), LEASE)
    assert (again.job_id, again.attempts) == (job.job_id, 2)


class _Failing:
    """A handler of the kind under test whose every attempt fails."""

    cut_short_on_stop = False

    def __init__(self, kind: str, store: Store) -> None:
        self.kind = kind
        self._store = store
        self.settled: list[datetime | None] = []

    def backoff(self, attempt: int) -> float:
        return 10.0 * attempt

    async def attempt(self, job: Job) -> Attempt[None]:
        raise RuntimeError(f"attempt {job.attempts} broke")

    async def settle(
        self, job: Job, attempt: Attempt[None], retry_at: datetime | None, now: datetime
    ) -> bool:
        self.settled.append(retry_at)
        return await self._store.jobs.conclude(job, now, attempt.error, retry_at)


async def test_failed_attempts_back_off_until_the_last_fails_for_good(
    queue: Store, clock: FakeClock, kind: str, enqueue: Enqueue
) -> None:
    await enqueue()
    handler = _Failing(kind, queue)
    service = Jobs(queue, clock, [handler])
    for attempt in range(1, MAX_ATTEMPTS + 1):
        [job] = await queue.jobs.claim([kind], "r1", 10, clock.now(), LEASE)
        assert job.attempts == attempt
        await service.run(job)
        clock.advance(10 * attempt)
    start = handler.settled[0]
    assert start is not None and handler.settled[1:] == [start + timedelta(seconds=20), None]
    row = await _row(queue, job)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert row.last_error == f"the attempt failed: attempt {MAX_ATTEMPTS} broke"
    clock.advance(10**6)
    assert await queue.jobs.claim([kind], "r1", 10, clock.now(), LEASE) == []
