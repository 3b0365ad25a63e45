"""Two `kennel serve` processes on one PostgreSQL database (issue 4): every schedule fires once,
every task end is delivered once, whichever process gets to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from databases import postgres_url
from fakellm import FakeLLM, Sleep, Text, ToolCall, tool_calls
from receiver import Receiver, serving_receiver
from server import KennelServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

SCHEDULES = 12
COUNTER = "open('count.txt', 'a').write('1')"


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


async def test_a_turn_of_a_killed_process_is_finished_by_the_other_from_its_last_step(
    tmp_path: Path, llm: FakeLLM
) -> None:
    text = "count, then answer"
    counting = tool_calls(ToolCall("run_python", {"code": COUNTER}, id="c1"))
    llm.script(text, counting, Sleep(60, Text("too late")))
    async with postgres_url() as url:
        # One workspace folder for both, as a shared volume would be in production.
        shared = tmp_path / "shared"
        env = {
            "KENNEL_DATABASE_URL": url,
            "KENNEL_JOB_LEASE_SECONDS": "3",
            "KENNEL_DATA_DIR": str(shared),
        }
        one, two = (KennelServer(tmp_path / name, llm, **env) for name in ("one", "two"))
        for server in (one, two):
            server.data_dir.mkdir()
        key = one.create_key()
        headers = {"Authorization": f"Bearer {key}"}
        try:
            await asyncio.to_thread(one.start)
            async with httpx.AsyncClient(base_url=one.base_url, headers=headers) as client:
                posted = asyncio.create_task(
                    client.post("/api/tasks", json={"input": text, "taskId": "tsk_x"}, timeout=90)
                )
                await _until_called(llm, text, after_tools=True)
                await asyncio.to_thread(two.start)
                llm.reset()
                llm.script(text, counting, Text("finished by the other process"))
                one.kill()
                with contextlib.suppress(httpx.TransportError):
                    await posted
            async with httpx.AsyncClient(base_url=two.base_url, headers=headers) as client:
                done = await _until(
                    client, "/api/tasks/tsk_x", lambda b: b["task"]["status"] == "completed"
                )
                [turn] = done["turns"]
                assert turn["outputText"] == "finished by the other process"
                worker_id = done["task"]["workerId"]
                counted = await client.get(f"/api/workers/{worker_id}/files/count.txt")
                assert counted.text == "1"  # the tool ran once
            [again] = _calls(llm, text)  # only the step in flight ran again
            assert any(message["role"] == "tool" for message in again["messages"])
        finally:
            for server in (one, two):
                server.stop()


def _calls(llm: FakeLLM, text: str) -> list[dict[str, Any]]:
    return [
        request
        for request in list(llm.requests)
        if any(m["role"] == "user" and m.get("content") == text for m in request["messages"])
        and "short title" not in str(request["messages"][0].get("content"))
    ]


async def _until_called(llm: FakeLLM, text: str, *, after_tools: bool) -> None:
    async with asyncio.timeout(60):
        while not any(
            any(m["role"] == "tool" for m in request["messages"]) == after_tools
            for request in _calls(llm, text)
        ):
            await asyncio.sleep(0.05)
