"""Schedules firing tasks (issue 4): driven by a fake clock, on SQLite and on PostgreSQL.

Most tests keep the runner off and fire with `ScheduleService.fire_due()`, so tasks stay
pending exactly as long as a test wants; the last ones run the real runner and scheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeClock
from fakellm import FakeLLM
from kennel.services.billing import NO_CREDITS
from kennel.services.schedules import STILL_RUNNING
from kennelapp import Api, kennel_api, new_schedule, new_worker, settings_for


@pytest.fixture
async def timed(tmp_path: Path, clock: FakeClock, database_url: str) -> AsyncIterator[Api]:
    settings = settings_for(tmp_path, None, database_url=database_url)
    async with kennel_api(settings, clock, with_runner=False) as running_api:
        yield running_api


async def _fire(api: Api) -> list[Any]:
    return await api.kennel.services.schedules.fire_due()


async def _runs(api: Api, worker_id: str, schedule_id: str) -> Any:
    response = await api.client.get(f"/api/workers/{worker_id}/schedules/{schedule_id}/runs")
    assert response.status_code == 200, response.text
    return response.json()


async def _task(api: Api, task_id: str) -> Any:
    response = await api.client.get(f"/api/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_delayed_schedule_fires_once_then_leaves_the_list(
    timed: Api, clock: FakeClock
) -> None:
    worker_id = await new_worker(timed.client)
    schedule = await new_schedule(
        timed, worker_id, {"type": "delayed", "delayInSeconds": 90}, budget="high"
    )
    clock.advance(89)
    assert await _fire(timed) == []

    clock.advance(1)
    [run] = await _fire(timed)
    assert run.skip_reason is None and run.schedule_id == schedule["id"]
    found = await _task(timed, run.task_id)
    task, [turn] = found["task"], found["turns"]
    assert (task["triggeredBy"], task["workerId"], task["status"]) == (
        "schedule",
        worker_id,
        "pending",
    )
    assert (turn["input"], turn["budget"]) == ("Summarise the news", "high")
    listed = await timed.client.get(f"/api/workers/{worker_id}/schedules")
    assert listed.json()["schedules"] == []

    clock.advance(3600)
    assert await _fire(timed) == []
    history = await _runs(timed, worker_id, schedule["id"])
    assert history["totalCount"] == 1
    assert history["data"] == [
        {
            "id": run.id,
            "scheduleId": schedule["id"],
            "workerId": worker_id,
            "taskId": run.task_id,
            "status": "pending",
            "scheduledFor": "2026-05-11T09:01:30.000Z",
            "firedAt": "2026-05-11T09:01:30.000Z",
            "manual": False,
            "skipReason": None,
        }
    ]
    state = (await timed.client.get(f"/api/workers/{worker_id}")).json()
    assert state["metadata"]["triggeredBy"] == "schedule"
    assert state["metadata"]["scheduleId"] == schedule["id"]


async def test_an_interval_keeps_its_rhythm_and_a_missed_run_fires_once(
    timed: Api, clock: FakeClock
) -> None:
    worker_id = await new_worker(timed.client)
    schedule = await new_schedule(timed, worker_id, {"type": "interval", "intervalSeconds": 3600})
    assert schedule["nextRunAt"] == "2026-05-11T10:00:00.000Z"

    clock.advance(3600 + 7)  # fired a little late: the next run stays on the hour
    [first] = await _fire(timed)
    listed = (await timed.client.get(f"/api/workers/{worker_id}/schedules")).json()
    assert listed["schedules"][0]["nextRunAt"] == "2026-05-11T11:00:00.000Z"
    assert first.skip_reason is None
    await _finish_all(timed)

    clock.advance(5 * 3600)  # down for five runs: one firing, then on to the next hour
    fired = await _fire(timed)
    assert len(fired) == 1 and fired[0].skip_reason is None
    listed = (await timed.client.get(f"/api/workers/{worker_id}/schedules")).json()
    assert listed["schedules"][0]["nextRunAt"] == "2026-05-11T16:00:00.000Z"


async def test_a_recurring_schedule_never_overlaps_itself(timed: Api, clock: FakeClock) -> None:
    worker_id = await new_worker(timed.client)
    schedule = await new_schedule(timed, worker_id, {"type": "interval", "intervalSeconds": 60})
    clock.advance(60)
    [first] = await _fire(timed)

    clock.advance(60)  # the first task has not run yet
    [skipped] = await _fire(timed)
    assert (skipped.task_id, skipped.skip_reason) == (None, STILL_RUNNING)
    history = (await _runs(timed, worker_id, schedule["id"]))["data"]
    assert [(r["status"], r["taskId"], r["skipReason"]) for r in history] == [
        ("skipped", None, STILL_RUNNING),
        ("pending", first.task_id, None),
    ]

    await _finish_all(timed)
    clock.advance(60)
    [again] = await _fire(timed)
    assert again.skip_reason is None and again.task_id not in (None, first.task_id)
    history = (await _runs(timed, worker_id, schedule["id"]))["data"]
    assert [r["status"] for r in history] == ["pending", "skipped", "error"]


async def test_a_cron_schedule_fires_at_wall_clock_time_in_its_zone(
    timed: Api, clock: FakeClock
) -> None:
    worker_id = await new_worker(timed.client)
    schedule = await new_schedule(
        timed, worker_id, {"type": "cron", "cron": "30 12 * * *", "timezone": "Europe/Madrid"}
    )
    assert schedule["nextRunAt"] == "2026-05-11T10:30:00.000Z"  # 12:30 CEST
    clock.advance(90 * 60 - 1)
    assert await _fire(timed) == []
    clock.advance(1)
    [run] = await _fire(timed)
    assert run.skip_reason is None
    listed = (await timed.client.get(f"/api/workers/{worker_id}/schedules")).json()
    assert listed["schedules"][0]["nextRunAt"] == "2026-05-12T10:30:00.000Z"


async def test_deleting_the_worker_stops_its_schedules(timed: Api, clock: FakeClock) -> None:
    worker_id = await new_worker(timed.client)
    await new_schedule(timed, worker_id, {"type": "interval", "intervalSeconds": 60})
    assert (await timed.client.delete(f"/api/workers/{worker_id}")).status_code == 200
    clock.advance(3600)
    assert await _fire(timed) == []
    assert await timed.kennel.services.schedules.seconds_until_due() is None


async def test_run_now_fires_at_once_and_leaves_the_timing_alone(
    timed: Api, clock: FakeClock
) -> None:
    worker_id = await new_worker(timed.client)
    schedule = await new_schedule(timed, worker_id, {"type": "cron", "cron": "@daily"})
    path = f"/api/workers/{worker_id}/schedules/{schedule['id']}"

    response = await timed.client.post(f"{path}/run-now", json={})
    assert response.status_code == 200, response.text
    run = response.json()
    assert (run["manual"], run["status"], run["firedAt"]) == (
        True,
        "pending",
        "2026-05-11T09:00:00.000Z",
    )
    assert (await _task(timed, run["taskId"]))["task"]["triggeredBy"] == "schedule"
    listed = (await timed.client.get(f"/api/workers/{worker_id}/schedules")).json()
    assert listed["schedules"][0]["nextRunAt"] == schedule["nextRunAt"]

    again = await timed.client.post(f"{path}/run-now")
    assert again.status_code == 409, again.text
    assert STILL_RUNNING in again.json()["error"]
    assert (await _runs(timed, worker_id, schedule["id"]))["totalCount"] == 1

    missing = await timed.client.post(f"/api/workers/{worker_id}/schedules/sch_nope/run-now")
    assert missing.status_code == 404
    assert (await timed.client.delete(path)).status_code == 200
    assert (await timed.client.post(f"{path}/run-now")).status_code == 404
    assert (await _runs(timed, worker_id, schedule["id"]))["totalCount"] == 1  # history stays


async def test_the_run_history_is_private_to_who_sees_the_worker(
    timed: Api, clock: FakeClock
) -> None:
    worker_id = await new_worker(timed.client)
    schedule = await new_schedule(timed, worker_id, {"type": "delayed", "delayInSeconds": 1})
    outsider = timed.as_key(await timed.new_key("other", "eve@other.test"))
    response = await outsider.get(f"/api/workers/{worker_id}/schedules/{schedule['id']}/runs")
    assert response.status_code == 404
    response = await outsider.post(f"/api/workers/{worker_id}/schedules/{schedule['id']}/run-now")
    assert response.status_code == 404
    unknown = await timed.client.get(f"/api/workers/{worker_id}/schedules/sch_nope/runs")
    assert unknown.status_code == 404
    bad_page = await timed.client.get(
        f"/api/workers/{worker_id}/schedules/{schedule['id']}/runs", params={"page": 0}
    )
    assert bad_page.status_code == 400


async def test_an_organization_without_credits_skips_its_firings(
    timed: Api, clock: FakeClock
) -> None:
    worker_id = await new_worker(timed.client)
    schedule = await new_schedule(timed, worker_id, {"type": "interval", "intervalSeconds": 60})
    await timed.kennel.store.auth.set_credit_balance(await first_org(timed), 0)
    clock.advance(60)
    [run] = await _fire(timed)
    assert (run.task_id, run.skip_reason) == (None, NO_CREDITS)
    listed = (await timed.client.get(f"/api/workers/{worker_id}/schedules")).json()
    assert listed["schedules"][0]["nextRunAt"] == "2026-05-11T09:02:00.000Z"
    assert (await _runs(timed, worker_id, schedule["id"]))["data"][0]["status"] == "skipped"


async def test_concurrent_firings_start_each_due_schedule_once(
    timed: Api, clock: FakeClock
) -> None:
    worker_id = await new_worker(timed.client)
    for _ in range(20):
        await new_schedule(timed, worker_id, {"type": "delayed", "delayInSeconds": 5})
    clock.advance(5)
    batches = await asyncio.gather(*(_fire(timed) for _ in range(4)))
    fired = [run for batch in batches for run in batch]
    assert len(fired) == 20
    assert len({run.schedule_id for run in fired}) == 20
    tasks = (await timed.client.get("/api/tasks", params={"workerId": worker_id})).json()
    assert tasks["totalCount"] == 20


async def first_org(api: Api) -> str:
    return (await api.kennel.services.auth.authenticate(f"Bearer {api.key}")).organization_id


async def _finish_all(api: Api) -> None:
    """Settle every queued turn as failed, the way a runner that gave up would."""
    from kennel.storage.tables import jobs, tasks, turns

    def work(conn: Any) -> None:
        conn.execute(jobs.update().values(status="failed"))
        conn.execute(turns.update().values(status="error"))
        conn.execute(tasks.update().values(status="error"))

    await api.kennel.store.database.write(work)


# --------------------------------------------------------------------------- with the runner


async def test_the_scheduler_fires_a_run_missed_while_the_server_was_down(
    tmp_path: Path, llm: FakeLLM, clock: FakeClock
) -> None:
    settings = settings_for(tmp_path, llm)
    async with kennel_api(settings, clock, with_runner=False) as stopped:
        worker_id = await new_worker(stopped.client)
        await new_schedule(stopped, worker_id, {"type": "delayed", "delayInSeconds": 60})
    clock.advance(600)  # the server was down when it was due

    async with kennel_api(settings, clock) as started:
        client = started.client
        async with asyncio.timeout(10):
            while (
                not (
                    done := (await client.get("/api/tasks", params={"workerId": worker_id})).json()
                )["data"]
                or done["data"][0]["status"] != "completed"
            ):
                await asyncio.sleep(0.02)
        [task] = done["data"]
        assert task["triggeredBy"] == "schedule"
        state = (await client.get(f"/api/workers/{worker_id}")).json()
        assert state["output_text"] == "echo: Summarise the news"
