"""Storage contract for webhooks and their execution log, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from conftest import FakeClock
from kennel import ids
from kennel.models import Task, TaskStatus, Worker
from kennel.models.webhooks import DeliveryStatus, WebhookExecution
from kennel.storage import Store
from kennel.storage.webhooks import queue_delivery
from records import stored_worker, submission


def _execution(worker: Worker, clock: FakeClock, **changes: object) -> WebhookExecution:
    execution = WebhookExecution(
        id=ids.new_id("whe"),
        worker_id=worker.id,
        organization_id=worker.organization_id,
        url="https://hooks.example.com/a",
        request_status=DeliveryStatus.SUCCESS,
        response_status=200,
        error_message=None,
        duration_ms=12,
        created_at=clock.now(),
    )
    return replace(execution, **changes)


def _accept(task: Task) -> None:
    return None


async def test_set_url_keeps_the_first_token(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    assert await store.webhooks.get(worker.id) is None
    first = await store.webhooks.set_url(worker.id, "https://a.example/", "whk_first", clock.now())
    assert (first.url, first.token) == ("https://a.example/", "whk_first")
    clock.advance(5)
    moved = await store.webhooks.set_url(worker.id, "https://b.example/", "whk_other", clock.now())
    assert (moved.url, moved.token) == ("https://b.example/", "whk_first")
    assert moved.updated_at > first.updated_at
    assert await store.webhooks.get(worker.id) == moved


async def test_clear_forgets_url_and_token(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    await store.webhooks.set_url(worker.id, "https://a.example/", "whk_first", clock.now())
    await store.webhooks.clear(worker.id, clock.now())
    assert await store.webhooks.get(worker.id) is None
    await store.webhooks.clear(worker.id, clock.now())
    again = await store.webhooks.set_url(worker.id, "https://a.example/", "whk_new", clock.now())
    assert again.token == "whk_new"


async def test_replace_token_needs_a_configured_webhook(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    assert await store.webhooks.replace_token(worker.id, "whk_x", clock.now()) is None
    await store.webhooks.set_url(worker.id, "https://a.example/", "whk_first", clock.now())
    replaced = await store.webhooks.replace_token(worker.id, "whk_second", clock.now())
    assert replaced is not None
    assert (replaced.url, replaced.token) == ("https://a.example/", "whk_second")


async def test_executions_page_newest_first(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    other = await stored_worker(store, clock, "bob@example.com")
    recorded = []
    for number in range(7):
        clock.advance(1)
        execution = _execution(worker, clock, duration_ms=number)
        await store.webhooks.record_execution(execution)
        recorded.append(execution)
    await store.webhooks.record_execution(_execution(other, clock))
    newest_first = list(reversed(recorded))

    page, total = await store.webhooks.executions(worker.id, offset=0, limit=3)
    assert total == 7 and page == newest_first[:3]
    last, _ = await store.webhooks.executions(worker.id, offset=6, limit=3)
    assert last == newest_first[6:]
    beyond, total = await store.webhooks.executions(worker.id, offset=9, limit=3)
    assert beyond == [] and total == 7


async def test_an_execution_keeps_its_task_and_failure(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    hooked = submission(worker, "tsk_hooked", provisional_title="Hello there")
    task = (await store.tasks.submit(hooked, clock.now(), _accept)).task
    failed = _execution(
        worker,
        clock,
        request_status=DeliveryStatus.ERROR,
        response_status=None,
        error_message="connection refused",
        task_key=task.key,
        task_id=task.id,
        task_title=task.title,
    )
    await store.webhooks.record_execution(failed)
    assert (await store.webhooks.executions(worker.id, offset=0, limit=50))[0] == [failed]


async def _queued_delivery(store: Store, clock: FakeClock) -> Worker:
    """A worker with a webhook and one task end queued for it."""
    worker = await stored_worker(store, clock)
    await store.webhooks.set_url(worker.id, "https://a.example/", "whk_first", clock.now())
    stored = await store.tasks.submit(submission(worker), clock.now(), _accept)
    task, turn = stored.task, stored.turn

    def work(conn: Any) -> bool:
        return queue_delivery(conn, task.key, turn.id, TaskStatus.COMPLETED, clock.now(), 8)

    assert await store.database.write(work)
    return worker


async def test_a_delivery_is_a_job_whose_attempts_are_logged_while_it_is_held(
    store: Store, clock: FakeClock
) -> None:
    worker = await _queued_delivery(store, clock)
    lease = timedelta(seconds=30)
    [job] = await store.jobs.claim(["webhook"], "owner", 10, clock.now(), lease)
    delivery = await store.webhooks.delivery(job)
    assert delivery is not None
    assert (delivery.attempt, delivery.token, delivery.event_type) == (
        1,
        "whk_first",
        "task.completed",
    )
    clock.advance(31)  # the attempt died with its process: the delivery is due again
    [expired] = await store.jobs.expired(clock.now())
    assert await store.jobs.requeue(expired, clock.now(), "lost", strikes=0, interruptions=1)
    [again] = await store.jobs.claim(["webhook"], "next", 10, clock.now(), lease)
    assert again.ref == job.ref

    execution = _execution(worker, clock, task_key=delivery.task_key)
    assert not await store.webhooks.finish_attempt(job, execution, "{}", clock.now(), None)
    assert await store.webhooks.finish_attempt(again, execution, "{}", clock.now(), None)
    assert await store.jobs.waiting(["webhook"]) == 0
    logged, total = await store.webhooks.executions(delivery.worker_id, offset=0, limit=10)
    assert total == 1 and logged[0].id == execution.id


async def test_clearing_a_webhook_drops_the_events_waiting_for_it(
    store: Store, clock: FakeClock
) -> None:
    worker = await _queued_delivery(store, clock)
    await store.webhooks.clear(worker.id, clock.now())
    assert await store.jobs.waiting(["webhook"]) == 0
    assert (
        await store.jobs.claim(["webhook"], "owner", 10, clock.now(), timedelta(seconds=30)) == []
    )
