"""Live and replayed streams: AI SDK-valid, resumable, ordered per task."""

from __future__ import annotations

import asyncio
import json

import pytest

from aisdk import validate_ui_messages, validate_ui_stream
from fakellm import FakeLLM, Sleep, Text
from kennelapp import Api


def _events(sse: str) -> list[tuple[int | None, str]]:
    """(id, data) of every SSE event, comments skipped."""
    events = []
    for block in sse.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if not lines:
            continue
        event_id = next((int(line[4:]) for line in lines if line.startswith("id: ")), None)
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        events.append((event_id, data))
    return events


async def _run(api: Api, text: str, task_id: str) -> dict:
    response = await api.client.post("/api/tasks", json={"input": text, "taskId": task_id})
    assert response.status_code == 200
    return response.json()


@pytest.mark.node
async def test_a_task_replay_passes_the_ai_sdk_and_shows_every_turn(api: Api) -> None:
    await _run(api, "first question", "tsk_replay")
    worker = await _run(api, "second question", "tsk_replay")

    response = await api.client.get(f"/api/workers/{worker['id']}", params={"stream": "true"})
    assert response.headers["content-type"].startswith("text/event-stream")
    check = validate_ui_stream(response.text)
    assert check.ok, check.error
    assistant_texts = [
        "".join(p["text"] for p in message["parts"] if p["type"] == "text")
        for message in check.messages
    ]
    assert assistant_texts == ["echo: first question", "echo: second question"]
    events = _events(response.text)
    ids = [event_id for event_id, _ in events if event_id is not None]
    assert ids == list(range(1, len(ids) + 1))
    assert json.loads(events[-2][1])["type"] == "data-worker"
    assert events[-1] == (None, "[DONE]")

    final = json.loads(events[-2][1])["data"]
    assert final["output_text"] == "echo: second question"
    assert validate_ui_messages(final["messages"]).ok


async def test_a_reader_resumes_after_the_last_event_it_saw(api: Api) -> None:
    worker = await _run(api, "resume me", "tsk_resume")
    full = _events((await api.client.get(f"/api/workers/{worker['id']}?stream=true")).text)
    numbered = [(event_id, data) for event_id, data in full if event_id is not None]
    cut = numbered[2][0]

    by_header = await api.client.get(
        f"/api/workers/{worker['id']}?stream=true", headers={"Last-Event-ID": str(cut)}
    )
    by_query = await api.client.get(
        f"/api/workers/{worker['id']}", params={"stream": "true", "startingAfter": cut}
    )
    for response in (by_header, by_query):
        rest = [(i, d) for i, d in _events(response.text) if i is not None]
        assert rest == numbered[3:]


async def test_resume_points_out_of_range_are_400_before_the_stream_starts(api: Api) -> None:
    worker = await _run(api, "resume me", "tsk_range")
    url = f"/api/workers/{worker['id']}"
    for last_event_id in ("9" * 30, str(2**63), "1" * 5000):
        response = await api.client.get(
            url, params={"stream": "true"}, headers={"Last-Event-ID": last_event_id}
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_request"
    for starting_after in (str(2**70), "1" * 5000, "-1"):
        response = await api.client.get(
            url, params={"stream": "true", "startingAfter": starting_after}
        )
        assert response.status_code == 400, response.text
    last = await api.client.get(url, params={"stream": "true", "startingAfter": 2**63 - 1})
    assert _events(last.text)[-1] == (None, "[DONE]")  # nothing after it, but a clean end
    unreadable = await api.client.get(
        url, params={"stream": "true"}, headers={"Last-Event-ID": b"\xb2"}
    )
    assert unreadable.status_code == 200  # not a number: read from the start, as before


async def test_accept_header_asks_for_the_stream_too(api: Api) -> None:
    worker = await _run(api, "hello", "tsk_accept")
    response = await api.client.get(
        f"/api/workers/{worker['id']}", headers={"Accept": "text/event-stream"}
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")


async def test_turns_of_one_task_run_strictly_in_order(api: Api, llm: FakeLLM) -> None:
    llm.script("slow first", Sleep(0.5, Text("first answer")))
    llm.script("then this", Text("second answer"))
    first = asyncio.create_task(_run(api, "slow first", "tsk_order"))
    while not any(r["messages"][-1].get("content") == "slow first" for r in llm.requests):
        await asyncio.sleep(0.01)
    second = await _run(api, "then this", "tsk_order")
    assert (await first)["output_text"] == "first answer"
    assert second["output_text"] == "second answer"
    turn_calls = [r for r in llm.requests if "title" not in r["messages"][0]["content"]]
    assert [m.get("content") for m in turn_calls[-1]["messages"][1:]] == [
        "slow first",
        "first answer",
        "then this",
    ]


@pytest.mark.node
async def test_a_streamed_follow_up_carries_only_its_own_turn(api: Api) -> None:
    await _run(api, "opening", "tsk_follow")
    response = await api.client.post(
        "/api/tasks", json={"input": "follow up", "taskId": "tsk_follow", "stream": True}
    )
    check = validate_ui_stream(response.text)
    assert check.ok, check.error
    texts = ["".join(p.get("text", "") for p in m["parts"]) for m in check.messages]
    assert texts == ["echo: follow up"]
    first_id = _events(response.text)[0][0]
    assert first_id is not None and first_id > 1


@pytest.mark.node
async def test_a_failed_run_ends_its_stream_with_an_error(api: Api, llm: FakeLLM) -> None:
    llm.fail("break it", 500)
    response = await api.client.post("/api/tasks", json={"input": "break it", "stream": True})
    check = validate_ui_stream(response.text)
    assert check.ok, check.error
    chunks = [json.loads(data) for _, data in _events(response.text) if data != "[DONE]"]
    types = [chunk["type"] for chunk in chunks]
    assert "error" in types
    assert chunks[types.index("error") + 1 :][-2] == {"type": "finish", "finishReason": "error"}
    worker = chunks[-1]["data"]
    assert worker["status"] == "completed" and worker["error"] is None
    assert worker["metadata"]["error"]["code"] == "provider_error"
    task = (await api.client.get(f"/api/tasks/{worker['metadata']['taskId']}")).json()
    assert task["task"]["status"] == "error"


async def test_only_turns_someone_streams_stream_their_model_requests(
    api: Api, llm: FakeLLM
) -> None:
    """A blocking turn nobody watches makes plain model requests (its text lands whole)."""
    llm.script("four words", Text("one two three four"))
    streamed = await api.client.post(
        "/api/tasks", json={"input": "four words", "taskId": "tsk_live", "stream": True}
    )
    deltas = [c for c in _chunks(streamed.text) if c["type"] == "text-delta"]
    assert len(deltas) > 1 and all(r["stream"] for r in llm.requests)

    llm.reset()
    llm.script("four words", Text("one two three four"))
    worker = await _run(api, "four words", "tsk_quiet")
    replay = await api.client.get(
        f"/api/workers/{worker['id']}", params={"stream": "true", "taskId": "tsk_quiet"}
    )
    deltas = [c for c in _chunks(replay.text) if c["type"] == "text-delta"]
    if api.kennel.store.database.dialect.sole_process:
        assert [d["delta"] for d in deltas] == ["one two three four"]
        assert not any(r["stream"] for r in llm.requests)
    else:  # readers in other processes can't be seen: PostgreSQL always streams
        assert "".join(d["delta"] for d in deltas) == "one two three four"


def _chunks(sse: str) -> list[dict]:
    return [json.loads(data) for _, data in _events(sse) if data != "[DONE]"]
