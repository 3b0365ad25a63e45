"""Domain records for storage tests: workers built in memory or stored in a real store."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from conftest import FakeClock
from kennel import ids
from kennel.models import (
    Budget,
    Submission,
    TaskStatus,
    TriggeredBy,
    TurnOutcome,
    Usage,
    Visibility,
    Worker,
)
from kennel.models.jobs import TURN_JOB, TurnJob
from kennel.storage import Store


def worker_record(org_id: str, user_id: str, clock: FakeClock, **changes: object) -> Worker:
    worker = Worker(
        id=ids.worker_id(),
        organization_id=org_id,
        user_id=user_id,
        title="Rex",
        instructions="Be helpful.",
        summary="",
        output_schema=None,
        visibility=Visibility.PUBLIC,
        model=None,
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    return replace(worker, **changes)


async def stored_worker(
    store: Store, clock: FakeClock, email: str = "ada@example.com", **changes: object
) -> Worker:
    """A worker of `email` (a member of organization acme, created if new), stored."""
    org, user = await store.auth.ensure_member("acme", email, clock.now())
    worker = worker_record(org.id, user.id, clock, **changes)
    await store.workers.create(worker)
    return worker


def submission(
    worker: Worker, task_id: str | None = None, text: str = "hello", **changes: object
) -> Submission:
    """A new turn of `worker` asking `text`, as the task service would hand it to storage."""
    made = Submission(
        organization_id=worker.organization_id,
        task_id=task_id or ids.task_id(),
        worker=worker,
        input=text,
        budget=Budget.STANDARD,
        triggered_by=TriggeredBy.API,
        created_by_user_id=worker.user_id,
        provisional_title=text[:80],
        metadata={},
        turn_id=ids.turn_id(),
        max_attempts=3,
    )
    return replace(made, **changes)


async def finished_turn(
    store: Store, clock: FakeClock, worker: Worker, credits: int, *, finish: bool = True
) -> None:
    """A turn of a new task of `worker`, claimed and (unless `finish` is False) finished now,
    having used `credits` credits, 100 input tokens per credit and 10 output tokens."""
    await store.tasks.submit(submission(worker), clock.now(), lambda _task: None)
    [job] = await claim_turns(store, "r1", 1, clock.now(), timedelta(seconds=30))
    if not finish:
        return
    usage = Usage(input_tokens=100 * credits, output_tokens=10, requests=1, credits=credits)
    outcome = TurnOutcome(status=TaskStatus.COMPLETED, output_text="ok", usage=usage)
    await store.runs.finish_turn(job, outcome, [], clock.now())


async def claim_turns(
    store: Store, owner: str, limit: int, now: datetime, lease: timedelta
) -> list[TurnJob]:
    """Claim turn jobs as the runner does, each with its task (as its run learns it)."""
    claimed = await store.jobs.claim([TURN_JOB], owner, limit, now, lease)
    return [TurnJob(job, (await store.runs.load_context(job.ref)).task.key) for job in claimed]
