"""Two `kennel serve` processes on one PostgreSQL database (issue 4): every schedule fires once,
every task end is delivered once, whichever process gets to it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from databases import postgres_url
from fakellm import FakeLLM
from receiver import Receiver, serving_receiver
from server import KennelServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

SCHEDULES = 12


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as found:
        yield found


async def _until(client: httpx.AsyncClient, path: str, done: Any, seconds: float = 60) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            body = (await client.get(path)).json()
            if done(body):
                return body
            await asyncio.sleep(0.1)


async def test_two_processes_fire_each_schedule_and_deliver_each_event_once(
    tmp_path: Path, llm: FakeLLM, receiver: Receiver
) -> None:
    async with postgres_url() as url:
        env = {
            "KENNEL_DATABASE_URL": url,
            "KENNEL_WEBHOOK_ALLOW_HTTP": "true",
            "KENNEL_ALLOW_PRIVATE_NETWORKS": "127.0.0.1/32",
        }
        servers = [KennelServer(tmp_path / name, llm, **env) for name in ("one", "two")]
        for server in servers:
            server.data_dir.mkdir()
        key = servers[0].create_key()
        try:
            await asyncio.gather(*(asyncio.to_thread(server.start) for server in servers))
            one, two = (
                httpx.AsyncClient(base_url=s.base_url, headers={"Authorization": f"Bearer {key}"})
                for s in servers
            )
            async with one, two:
                await _fire_and_deliver(one, two, receiver)
        finally:
            for server in servers:
                server.stop()


async def _fire_and_deliver(
    one: httpx.AsyncClient, two: httpx.AsyncClient, receiver: Receiver
) -> None:
    worker_id = (await one.post("/api/workers", json={"title": "Rex"})).json()["id"]
    hook = receiver.endpoint()
    assert (await two.put(f"/api/workers/{worker_id}/webhook", json={"url": hook})).is_success
    schedule_ids = []
    for number in range(SCHEDULES):
        when = {"type": "delayed", "delayInSeconds": 1}
        body = {"input": f"scheduled {number}", "when": when}
        schedule = await (one if number % 2 else two).post(
            f"/api/workers/{worker_id}/schedules", json=body
        )
        schedule_ids.append(schedule.json()["id"])

    def all_completed(listing: Any) -> bool:
        statuses = [task["status"] for task in listing["data"]]
        return len(statuses) >= SCHEDULES and set(statuses) == {"completed"}

    tasks = await _until(two, f"/api/tasks?workerId={worker_id}", all_completed)
    assert tasks["totalCount"] == SCHEDULES
    assert {task["triggeredBy"] for task in tasks["data"]} == {"schedule"}
    for schedule_id in schedule_ids:
        runs = (await one.get(f"/api/workers/{worker_id}/schedules/{schedule_id}/runs")).json()
        assert runs["totalCount"] == 1

    await asyncio.to_thread(receiver.wait_for, hook, 30, SCHEDULES)
    await asyncio.sleep(1)  # a second delivery of any event would have arrived by now
    delivered = receiver.to(hook)
    events = Counter(json.loads(d.body)["data"]["task"]["id"] for d in delivered)
    assert set(events) == {task["id"] for task in tasks["data"]}
    assert set(events.values()) == {1}
    assert len({d.headers["webhook-id"] for d in delivered}) == SCHEDULES
    log = (await one.get(f"/api/workers/{worker_id}/webhook/executions")).json()
    assert len(log["logs"]) == SCHEDULES
