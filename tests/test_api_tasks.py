"""Tasks over HTTP against the real app and runner, with the fake model."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from fakellm import FakeLLM, Text
from kennel.models import Event, Turn
from kennelapp import Api, kennel_api, settings_for


async def test_a_task_without_worker_creates_one_and_answers(api: Api, llm: FakeLLM) -> None:
    response = await api.client.post("/api/tasks", json={"input": "Say hello to Oslo"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    worker = response.json()
    assert worker["object"] == "worker" and worker["id"].startswith("wrk_")
    assert worker["status"] == "completed" and worker["running"] is False
    assert worker["output_text"] == "echo: Say hello to Oslo"
    assert worker["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "echo: Say hello to Oslo",
    }
    assert worker["metadata"]["taskId"] == response.headers["x-task-id"]
    assert worker["usage"]["credits"] >= 1
    assert worker["url"] == f"http://kennel.test/worker/{worker['id']}"
    assert [m["role"] for m in worker["messages"]] == ["user", "assistant"]

    task = (await api.client.get(f"/api/tasks/{worker['metadata']['taskId']}")).json()
    assert task["task"]["status"] == "completed" and task["task"]["triggeredBy"] == "api"
    assert task["turns"][0]["outputText"] == "echo: Say hello to Oslo"
    template = (await api.client.get(f"/api/workers/{worker['id']}")).json()
    assert template["output_text"] == "echo: Say hello to Oslo"
    assert llm.requests[0]["messages"][0] == {"role": "system", "content": "Say hello to Oslo"}


async def test_a_long_first_input_gets_a_title_from_the_model(api: Api, llm: FakeLLM) -> None:
    text = "Please compare the train and bus connections between Oslo and Bergen for next weekend"
    worker = (await api.client.post("/api/tasks", json={"input": text})).json()
    assert worker["metadata"]["taskTitle"] == "Please compare the train and"
    task = (await api.client.get(f"/api/tasks/{worker['metadata']['taskId']}")).json()
    assert task["task"]["title"] == "Please compare the train and"
    assert any("short title" in r["messages"][0]["content"] for r in llm.requests)


async def test_a_short_first_input_is_its_own_title(api: Api, llm: FakeLLM) -> None:
    worker = (await api.client.post("/api/tasks", json={"input": "Say  hello\tto Oslo"})).json()
    assert worker["metadata"]["taskTitle"] == "Say hello to Oslo"
    assert not any("short title" in r["messages"][0]["content"] for r in llm.requests)


async def test_follow_up_turns_see_the_conversation(api: Api, llm: FakeLLM) -> None:
    first = (
        await api.client.post("/api/tasks", json={"input": "I am Ada", "taskId": "tsk_chat"})
    ).json()
    second = (
        await api.client.post("/api/tasks", json={"input": "Who am I?", "taskId": "tsk_chat"})
    ).json()
    assert second["id"] == first["id"]
    assert second["metadata"]["taskId"] == "tsk_chat"
    contents = [m.get("content") for m in llm.requests[-1]["messages"]]
    assert contents[1:] == ["I am Ada", "echo: I am Ada", "Who am I?"]
    task = (await api.client.get("/api/tasks/tsk_chat")).json()
    assert [t["seq"] for t in task["turns"]] == [0, 1]
    assert task["task"]["totals"]["turnCount"] == 2
    assert len(second["messages"]) == 4


async def test_streamed_task(api: Api, llm: FakeLLM) -> None:
    llm.script("stream me", Text("one two three"))
    response = await api.client.post("/api/tasks", json={"input": "stream me", "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    frames = [f for f in response.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    worker = json.loads(frames[-2].removeprefix("data: "))
    assert worker["type"] == "data-worker" and worker["data"]["output_text"] == "one two three"
    assert frames[0].startswith("id: 1\ndata: ")
    assert json.loads(frames[0].split("data: ", 1)[1])["type"] == "start"


async def test_nul_characters_from_the_model_are_kept_out_of_the_database(
    api: Api, llm: FakeLLM
) -> None:
    # PostgreSQL's text refuses NUL: what a model (or a tool) writes must still be recorded.
    llm.script("nul please", Text("a\x00b"))
    response = await api.client.post("/api/tasks", json={"input": "nul please"})
    worker = response.json()
    assert response.status_code == 200 and "error" not in worker["metadata"]
    assert worker["output_text"] == "a\ufffdb"
    task = (await api.client.get(f"/api/tasks/{worker['metadata']['taskId']}")).json()
    assert task["task"]["status"] == "completed"
    stream = await api.client.get(
        f"/api/workers/{worker['id']}",
        params={"stream": "true", "taskId": worker["metadata"]["taskId"]},
    )
    assert "\x00" not in stream.text and "\\u0000" not in stream.text


async def test_a_blocking_answer_learns_that_its_turn_ended_without_reading_the_turn(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waits for the end from before the turn is stored: the wake-up is all it needs."""
    reads: list[str] = []
    get_turn = api.kennel.store.tasks.get_turn

    async def counted(turn_id: str) -> Turn | None:
        reads.append(turn_id)
        return await get_turn(turn_id)

    monkeypatch.setattr(api.kennel.store.tasks, "get_turn", counted)
    response = await api.client.post("/api/tasks", json={"input": "Say hello to Oslo"})
    assert response.json()["status"] == "completed"
    assert reads == []


async def test_a_stream_reads_its_turns_events_only_once_they_are_written(
    tmp_path: Path, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It listens from before the turn is stored, so its first read is for events written;
    a read that finds the turn ended has its last events, so none follows it."""
    async with kennel_api(settings_for(tmp_path, llm)) as api:
        events = api.kennel.store.events
        news = events.news
        read: list[int] = []

        async def counted(*args: object, **kwargs: object) -> tuple[list[Event], bool]:
            found = await news(*args, **kwargs)  # type: ignore[arg-type]
            read.append(len(found[0]))
            return found

        monkeypatch.setattr(events, "news", counted)
        body = {"input": "Say hello to Oslo", "stream": True}
        response = await api.client.post("/api/tasks", json=body)
    assert "echo: Say hello to Oslo" in response.text
    assert response.text.endswith("data: [DONE]\n\n")
    assert read and read[0] > 0 and read[-1] > 0


async def test_a_blocking_answer_whose_wake_up_is_lost_reads_the_turn_at_the_keepalive(
    tmp_path: Path, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wake-ups are hints: without one, the answer still comes, after a keep-alive."""
    settings = settings_for(tmp_path, llm, keepalive_seconds=0.3)
    async with kennel_api(settings) as api:
        wakeups = api.kennel.store.database.wakeups
        publish = wakeups.publish_local
        monkeypatch.setattr(
            wakeups,
            "publish_local",
            lambda topic: None if topic.startswith("turn:") else publish(topic),
        )
        started = time.monotonic()
        async with asyncio.timeout(10):
            response = await api.client.post("/api/tasks", json={"input": "Say hello to Oslo"})
    assert response.json()["output_text"] == "echo: Say hello to Oslo"
    assert time.monotonic() - started >= 0.3


async def test_a_turn_nobody_follows_asks_the_model_without_streaming(
    api: Api, llm: FakeLLM
) -> None:
    """On every database: a blocking call has no reader, here or in another process, so its
    model request is a plain one and its chunks are written once, with its end."""
    response = await api.client.post("/api/tasks", json={"input": "Say hello to Oslo"})
    assert response.json()["status"] == "completed"
    assert [request.get("stream", False) for request in llm.requests] == [False]
