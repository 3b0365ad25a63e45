"""The runner hands unfinished turns back on a clean stop (the next start finishes them), and
retries a turn whose run raised with backoff until its attempts are spent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import FakeClock
from fakellm import FakeLLM, Sleep, Text
from kennel.app import build, running
from kennel.config import Settings
from kennel.models import TaskStatus, Turn, TurnError
from kennel.models.jobs import TURN_JOB, Job
from kennel.runner.runner import Runner
from kennel.services.jobs import Attempt, Jobs
from kennel.services.tasks import TaskRequest
from kennel.storage import JOBS_TOPIC, Database, Store
from kennel.storage.jobs import enqueue
from kennelapp import Api, kennel_api, new_worker, settings_for


async def _until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.01)


def _counting_claims(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many jobs each claim of the runner takes, from now on."""
    claims: list[int] = []
    claim = api.kennel.store.jobs.claim

    async def counted(*args: object, **kwargs: object) -> list[Job]:
        claimed = await claim(*args, **kwargs)  # type: ignore[arg-type]
        claims.append(len(claimed))
        return claimed

    monkeypatch.setattr(api.kennel.store.jobs, "claim", counted)
    return claims


async def test_requests_are_served_once_the_runner_takes_work(
    tmp_path: Path, llm: FakeLLM, database_url: str
) -> None:
    """The first request after a start finds the runner ready to start its turn at once."""
    kennel = build(settings_for(tmp_path, llm, database_url=database_url))
    async with running(kennel):
        claimant = kennel.runner.reserve()
        assert claimant is not None and claimant.owner == kennel.runner.owner
        kennel.runner.release()


async def test_a_new_task_starts_without_a_claim_or_a_wake_up(
    tmp_path: Path, llm: FakeLLM, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a slot free, a submission stores its turn claimed by this process's runner, which
    starts it at once; its end wakes no runner when it leaves no work (no later turn, no
    delivery, no reply), and no process is woken by its own notification."""
    settings = settings_for(tmp_path, llm, database_url=database_url)
    async with kennel_api(settings) as api:
        # A first task, so that the runner's claim at start is behind us.
        assert (await api.client.post("/api/tasks", json={"input": "first"})).status_code == 200
        claims = _counting_claims(api, monkeypatch)
        for n in range(3):
            response = await api.client.post("/api/tasks", json={"input": f"task {n}"})
            assert response.json()["status"] == "completed"
        await asyncio.sleep(0.2)  # a late wake-up would claim in this time
    assert claims == []


async def test_with_every_slot_busy_a_new_task_waits_for_a_claim(
    tmp_path: Path, llm: FakeLLM, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path, llm, database_url=database_url, runner_concurrency=1)
    llm.script("slow", Sleep(0.5, Text("slow done")))
    async with kennel_api(settings) as api:
        assert (await api.client.post("/api/tasks", json={"input": "first"})).status_code == 200
        claims = _counting_claims(api, monkeypatch)
        slow = asyncio.create_task(api.client.post("/api/tasks", json={"input": "slow"}))
        await _until(lambda: any(r["messages"][-1].get("content") == "slow" for r in llm.requests))
        quick = await api.client.post("/api/tasks", json={"input": "quick"})
        assert quick.json()["output"][0]["content"][0]["text"] == "echo: quick"
        assert (await slow).json()["status"] == "completed"
    assert claims[0] == 1  # the slow task's end freed the slot; a claim took the quick one


async def test_a_follow_up_waits_for_the_turn_before_it(
    tmp_path: Path, llm: FakeLLM, database_url: str
) -> None:
    settings = settings_for(tmp_path, llm, database_url=database_url)
    llm.script("slow", Sleep(0.5, Text("slow done")))
    async with kennel_api(settings) as api:
        principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
        worker_id = await new_worker(api.client)
        tasks = api.kennel.services.tasks
        first = await tasks.submit(
            principal, TaskRequest(input="slow", worker_id=worker_id, task_id="tsk_f")
        )
        assert first.turn.status is TaskStatus.RUNNING  # started as it was stored
        second = await tasks.submit(
            principal, TaskRequest(input="next", worker_id=worker_id, task_id="tsk_f")
        )
        assert second.turn.status is TaskStatus.PENDING  # queued behind the first
        done_first = await _turn_when(api, first.turn.id, TaskStatus.COMPLETED)
        done_second = await _turn_when(api, second.turn.id, TaskStatus.COMPLETED)
    assert done_first.completed_at is not None and done_second.started_at is not None
    assert done_second.started_at >= done_first.completed_at


async def test_a_submission_whose_caller_goes_away_still_starts_its_turn(
    tmp_path: Path, llm: FakeLLM, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn is stored claimed by this process's runner: a caller cancelled between the
    commit and the start must not leave it to wait for its lease to run out."""
    settings = settings_for(tmp_path, llm, database_url=database_url)
    async with kennel_api(settings) as api:
        principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
        worker_id = await new_worker(api.client)
        stored: list[str] = []
        returned = asyncio.Event()
        store_submit = api.kennel.store.tasks.submit

        async def slow_to_return(*args: object, **kwargs: object) -> object:
            result = await store_submit(*args, **kwargs)  # type: ignore[arg-type]
            stored.append(result.turn.id)
            await returned.wait()  # the caller is cancelled here, after the commit
            return result

        monkeypatch.setattr(api.kennel.store.tasks, "submit", slow_to_return)
        request = TaskRequest(input="hello", worker_id=worker_id, task_id="tsk_gone")
        caller = asyncio.create_task(api.kennel.services.tasks.submit(principal, request))
        await _until(lambda: bool(stored))
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        returned.set()
        assert (await _turn_when(api, stored[0], TaskStatus.COMPLETED)).output_text


async def test_a_clean_stop_hands_the_turn_back_without_spending_an_attempt(
    tmp_path: Path, llm: FakeLLM, database_url: str
) -> None:
    settings = settings_for(tmp_path, llm, database_url=database_url)
    llm.script("long job", Sleep(30, Text("never")))
    async with kennel_api(settings) as api:
        post = asyncio.create_task(
            api.client.post("/api/tasks", json={"input": "long job", "taskId": "tsk_stop"})
        )
        await _until(
            lambda: any(r["messages"][-1].get("content") == "long job" for r in llm.requests)
        )
        organization = (
            await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
        ).organization_id
        post.cancel()
    task = await _stored_task(settings, organization)
    assert task[0] is TaskStatus.PENDING and task[1] == 0

    llm.reset()
    llm.script("long job", Text("finished on the next start"))
    async with kennel_api(settings) as api:
        response = await api.client.get("/api/tasks/tsk_stop")
        for _ in range(500):
            if response.json()["task"]["status"] == "completed":
                break
            await asyncio.sleep(0.02)
            response = await api.client.get("/api/tasks/tsk_stop")
        assert response.json()["turns"][0]["outputText"] == "finished on the next start"


async def _stored_task(settings: Settings, organization: str) -> tuple[TaskStatus, int]:
    store = Store(Database(settings.resolved_database_url))
    try:
        task = await store.tasks.get(organization, "tsk_stop")
        assert task is not None
        [turn] = await store.tasks.turns_of(task.key)
        return turn.status, turn.attempts
    finally:
        await store.close()


async def test_a_turn_whose_run_raises_is_retried_with_backoff_then_ends_in_error(
    tmp_path: Path,
    llm: FakeLLM,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    settings = settings_for(tmp_path, llm, job_max_attempts=2, database_url=database_url)
    async with kennel_api(settings, clock) as api:
        attempts: list[int] = []

        async def broken(job: Job) -> None:
            attempts.append(job.attempts)
            raise RuntimeError("the disk is on fire")

        monkeypatch.setattr(api.kennel.turns, "run", broken)
        worker_id = await new_worker(api.client)
        principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
        request = TaskRequest(input="hello", worker_id=worker_id, task_id="tsk_broken")
        submitted = await api.kennel.services.tasks.submit(principal, request)
        await _until(lambda: attempts == [1])
        turn = await _turn_when(api, submitted.turn.id, TaskStatus.PENDING)
        assert turn.error is None  # waiting for its next attempt, not failed

        assert await api.kennel.runner.work_due(TURN_JOB) == 0  # backing off
        clock.advance(5 * 1.2)  # the longest first wait, jitter included
        assert await api.kennel.runner.work_due(TURN_JOB) == 1
        assert attempts == [1, 2]
        turn = await _turn_when(api, submitted.turn.id, TaskStatus.ERROR)
        assert turn.error == TurnError("internal_error", "the attempt failed: the disk is on fire")
        task = (await api.client.get("/api/tasks/tsk_broken")).json()
        assert task["task"]["status"] == "error"
        stream = await api.client.get(f"/api/workers/{worker_id}", params={"stream": "true"})
        assert '"errorText":"the attempt failed: the disk is on fire"' in stream.text
        clock.advance(3600)
        assert await api.kennel.runner.work_due(TURN_JOB) == 0


async def _turn_when(api: Api, turn_id: str, status: TaskStatus) -> Turn:
    async with asyncio.timeout(10):
        while True:
            turn = await api.kennel.store.tasks.get_turn(turn_id)
            if turn is not None and turn.status is status:
                return turn
            await asyncio.sleep(0.01)


class _Unsettled:
    """A kind of job whose attempts work but can't be recorded (the database went away)."""

    kind = "probe"
    cut_short_on_stop = False

    def __init__(self) -> None:
        self.attempted: list[str] = []

    def backoff(self, attempt: int) -> float:
        return 1.0

    async def attempt(self, job: Job) -> Attempt[None]:
        self.attempted.append(job.ref)
        return Attempt()

    async def settle(
        self, job: Job, attempt: Attempt[None], retry_at: datetime | None, now: datetime
    ) -> bool:
        raise RuntimeError("the database went away")


async def test_a_job_that_could_not_be_settled_leaves_the_runner_running(
    store: Store, clock: FakeClock
) -> None:
    handler = _Unsettled()
    runner = Runner(store, Jobs(store, clock, [handler]), clock, Settings(), sole_runner=False)

    def queue(ref: str) -> Callable[[sa.Connection], None]:
        def work(conn: sa.Connection) -> None:
            enqueue(conn, "probe", ref, clock.now(), max_attempts=3)
            store.database.publish(conn, JOBS_TOPIC)

        return work

    running = asyncio.create_task(runner.run())
    await store.database.write(queue("first"))
    await _until(lambda: handler.attempted == ["first"])
    await store.database.write(queue("second"))  # claimed by the same, still running, loop
    await _until(lambda: handler.attempted == ["first", "second"])
    runner.stop()
    await running  # ends cleanly: no failure escaped
    # Not settled: the jobs stayed the runner's until it stopped and handed them back.
    again = await store.jobs.claim(["probe"], "next", 10, clock.now(), timedelta(seconds=30))
    assert sorted((job.ref, job.attempts) for job in again) == [("first", 1), ("second", 1)]


class _Slow:
    """A kind of job whose attempts take until `go` is set."""

    def __init__(self, kind: str, store: Store, *, cut_short_on_stop: bool) -> None:
        self.kind = kind
        self.cut_short_on_stop = cut_short_on_stop
        self._store = store
        self.started = asyncio.Event()
        self.go = asyncio.Event()

    def backoff(self, attempt: int) -> float:
        return 1.0

    async def attempt(self, job: Job) -> Attempt[None]:
        self.started.set()
        await self.go.wait()
        return Attempt()

    async def settle(
        self, job: Job, attempt: Attempt[None], retry_at: datetime | None, now: datetime
    ) -> bool:
        return await self._store.jobs.conclude(job, now, attempt.error, retry_at)


async def test_a_clean_stop_cuts_long_attempts_short_and_lets_short_ones_end(
    store: Store, clock: FakeClock
) -> None:
    long = _Slow("long", store, cut_short_on_stop=True)
    short = _Slow("short", store, cut_short_on_stop=False)
    runner = Runner(store, Jobs(store, clock, [long, short]), clock, Settings(), sole_runner=False)

    def queue(conn: sa.Connection) -> None:
        enqueue(conn, "long", "a turn, say", clock.now(), max_attempts=3)
        enqueue(conn, "short", "a delivery, say", clock.now(), max_attempts=3)
        store.database.publish(conn, JOBS_TOPIC)

    running = asyncio.create_task(runner.run())
    await store.database.write(queue)
    async with asyncio.timeout(10):
        await long.started.wait()
        await short.started.wait()
    runner.stop()
    await asyncio.sleep(0.1)
    assert not running.done()  # the short attempt is still going: the stop waits for it
    short.go.set()
    await running
    assert await store.jobs.waiting(["short"]) == 0  # done
    [handed_back] = await store.jobs.claim(["long"], "next", 1, clock.now(), timedelta(seconds=30))
    assert handed_back.attempts == 1  # cut short without spending an attempt
