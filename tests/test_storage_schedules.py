"""Storage contract for schedules: every test runs against SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from conftest import FakeClock
from kennel import ids
from kennel.models import Budget, Schedule, ScheduleKind, Worker
from kennel.storage import Store
from records import stored_worker


def _schedule(worker: Worker, clock: FakeClock, **changes: object) -> Schedule:
    schedule = Schedule(
        id=ids.new_id("sch"),
        worker_id=worker.id,
        organization_id=worker.organization_id,
        input="Summarise the news",
        budget=Budget.HIGH,
        kind=ScheduleKind.CRON,
        delay_seconds=None,
        interval_seconds=None,
        cron="0 9 * * 1-5",
        timezone="Europe/Madrid",
        run_at=None,
        next_run_at=clock.now() + timedelta(hours=1),
        created_by_user_id=worker.user_id,
        created_at=clock.now(),
    )
    return replace(schedule, **changes)


async def test_a_schedule_reads_back_as_stored(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    # Milliseconds survive; the stored timestamps are epoch milliseconds.
    run_at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    schedule = _schedule(
        worker,
        clock,
        kind=ScheduleKind.SCHEDULED,
        cron=None,
        timezone=None,
        run_at=run_at,
        next_run_at=run_at,
    )
    await store.schedules.create(schedule)
    assert await store.schedules.list_active(worker.id) == [schedule]


async def test_active_schedules_are_listed_oldest_first(store: Store, clock: FakeClock) -> None:
    worker = await stored_worker(store, clock)
    other = await stored_worker(store, clock, "bob@example.com")
    first = _schedule(worker, clock)
    clock.advance(1)
    second = _schedule(worker, clock, kind=ScheduleKind.INTERVAL, cron=None, interval_seconds=60)
    clock.advance(1)
    fired = _schedule(worker, clock, kind=ScheduleKind.DELAYED, cron=None, next_run_at=None)
    for schedule in (second, first, fired, _schedule(other, clock)):
        await store.schedules.create(schedule)
    assert [s.id for s in await store.schedules.list_active(worker.id)] == [first.id, second.id]


async def test_cancel_stops_only_an_active_schedule_of_that_worker(
    store: Store, clock: FakeClock
) -> None:
    worker = await stored_worker(store, clock)
    other = await stored_worker(store, clock, "bob@example.com")
    schedule = _schedule(worker, clock)
    await store.schedules.create(schedule)
    assert not await store.schedules.cancel(other.id, schedule.id, clock.now())
    assert not await store.schedules.cancel(worker.id, "sch_unknown", clock.now())
    assert await store.schedules.cancel(worker.id, schedule.id, clock.now())
    assert await store.schedules.list_active(worker.id) == []
    assert not await store.schedules.cancel(worker.id, schedule.id, clock.now())
