"""Cancelling a task (issue 3, extension `POST /api/tasks/{taskId}/cancel`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from aisdk import validate_ui_stream
from fakellm import FakeLLM, Sleep, Text, ToolCall, tool_calls
from kennel.errors import LeaseLostError
from kennel.services.tasks import Submitted, TaskRequest
from kennelapp import Api, kennel_api, new_worker, settings_for
from records import claim_turns


@pytest.fixture
async def api(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, llm, cancel_grace_seconds=5)) as running:
        yield running


async def _until(predicate: Any, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.02)


async def _cancel(api: Api, task_id: str) -> Any:
    response = await api.client.post(f"/api/tasks/{task_id}/cancel")
    assert response.status_code == 200, response.text
    return response.json()


async def test_cancel_stops_the_model_call_and_keeps_what_the_turn_did(
    api: Api, llm: FakeLLM
) -> None:
    llm.script(
        "look around",
        tool_calls(ToolCall("list_files", {})),
        Sleep(60, Text("never said")),
    )
    worker_id = await new_worker(api.client)
    body = {"input": "look around", "workerId": worker_id, "taskId": "t-cancel"}
    blocked = asyncio.create_task(api.client.post("/api/tasks", json=body))
    await _until(lambda: len(llm.requests) == 2)  # the tool ran; the second call hangs

    cancelled = await _cancel(api, "t-cancel")
    assert cancelled["task"]["status"] == "aborted"
    [turn] = cancelled["turns"]
    assert turn["status"] == "aborted" and turn["completedAt"] is not None

    answer = (await blocked).json()  # the blocked request ends with the run
    assert (answer["status"], answer["running"]) == ("completed", False)
    assert answer["metadata"]["incompleteReason"] == "cancelled"
    parts = answer["messages"][-1]["parts"]
    assert any(part["type"] == "tool-list_files" for part in parts)  # the partial output

    await asyncio.sleep(0.3)
    assert len(llm.requests) == 2  # no request after the cancel

    again = await _cancel(api, "t-cancel")  # idempotent
    assert again["task"]["status"] == "aborted"


@pytest.mark.node
async def test_a_cancelled_stream_ends_with_an_abort_chunk_clients_accept(
    api: Api, llm: FakeLLM
) -> None:
    llm.script("wait for ever", Sleep(60, Text("never said")))
    worker_id = await new_worker(api.client)
    body = {"input": "wait for ever", "workerId": worker_id, "taskId": "t-stream", "stream": True}

    async def read() -> str:
        async with api.client.stream("POST", "/api/tasks", json=body) as response:
            return "".join([text async for text in response.aiter_text()])

    reading = asyncio.create_task(read())
    await _until(lambda: len(llm.requests) == 1)
    await _cancel(api, "t-stream")
    stream = await reading
    assert '"type":"abort"' in stream and stream.rstrip().endswith("data: [DONE]")
    check = validate_ui_stream(stream)
    assert check.ok, check.error


async def test_cancel_kills_the_sandbox_process(api: Api, llm: FakeLLM) -> None:
    if not api.kennel.engines.sandbox.available:
        pytest.fail(f"the sandbox must work here: {api.kennel.engines.sandbox.unavailable_reason}")
    code = "import time\nopen('started', 'w').close()\ntime.sleep(60)\n"
    llm.script("run it", tool_calls(ToolCall("run_python", {"code": code})), Text("done"))
    worker_id = await new_worker(api.client)
    body = {"input": "run it", "workerId": worker_id, "taskId": "t-sandbox"}
    blocked = asyncio.create_task(api.client.post("/api/tasks", json=body))
    me = psutil.Process()

    def sandboxes() -> list[psutil.Process]:
        return [p for p in me.children(recursive=True) if p.name() == "bwrap"]

    await _until(lambda: bool(sandboxes()))
    running = sandboxes()
    await _cancel(api, "t-sandbox")
    await blocked
    assert sandboxes() == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in running)
    assert len(llm.requests) == 1  # the model never saw the tool's result


async def test_queued_turns_end_at_once_and_the_task_is_aborted(
    tmp_path: Path, llm: FakeLLM
) -> None:
    async with kennel_api(settings_for(tmp_path, llm), with_runner=False) as api:
        worker_id = await new_worker(api.client)
        for text in ("first", "second"):
            await _queue(api, text, worker_id, "t-queued")
        cancelled = await _cancel(api, "t-queued")
        assert cancelled["task"]["status"] == "aborted"
        assert [t["status"] for t in cancelled["turns"]] == ["aborted", "aborted"]
        assert await claim_turns(api.kennel.store, "late", 10, _now(api), _lease()) == []


async def test_a_run_that_does_not_stop_is_ended_without_it(tmp_path: Path, llm: FakeLLM) -> None:
    settings = settings_for(tmp_path, llm, cancel_grace_seconds=0.2)
    async with kennel_api(settings, with_runner=False) as api:
        worker_id = await new_worker(api.client)
        await _queue(api, "hello", worker_id, "t-ghost")
        # A runner in a process that is gone holds the turn.
        [job] = await claim_turns(api.kennel.store, "ghost", 1, _now(api), _lease())

        cancelled = await _cancel(api, "t-ghost")
        assert cancelled["task"]["status"] == "aborted"
        assert cancelled["turns"][0]["status"] == "aborted"
        with pytest.raises(LeaseLostError):  # whatever the ghost writes later is refused
            await api.kennel.store.runs.append_events(job, ['{"type":"x"}'], _now(api), _lease())
        stream = await api.client.get(f"/api/workers/{worker_id}", params={"stream": "true"})
        assert '"type":"start"' in stream.text and '"type":"abort"' in stream.text


async def test_who_may_cancel_and_what_can_not_be_cancelled(api: Api, llm: FakeLLM) -> None:
    worker_id = await new_worker(api.client)
    done = await api.client.post(
        "/api/tasks", json={"input": "quick", "workerId": worker_id, "taskId": "t-done"}
    )
    assert done.status_code == 200
    response = await api.client.post("/api/tasks/t-done/cancel")
    assert response.status_code == 409, response.text
    assert (await api.client.post("/api/tasks/t-unknown/cancel")).status_code == 404
    outsider = api.as_key(await api.new_key("other", "eve@other.test"))
    assert (await outsider.post("/api/tasks/t-done/cancel")).status_code == 404


async def _queue(api: Api, text: str, worker_id: str, task_id: str) -> Submitted:
    """Store a turn without waiting for it (with no runner, nothing runs it)."""
    principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
    request = TaskRequest(input=text, worker_id=worker_id, task_id=task_id)
    return await api.kennel.services.tasks.submit(principal, request)


def _now(api: Api) -> datetime:
    return datetime.now(UTC)


def _lease() -> timedelta:
    return timedelta(seconds=30)


async def test_a_cancelled_turn_keeps_its_files_and_pays_for_what_it_did(
    api: Api, llm: FakeLLM
) -> None:
    llm.script(
        "draft it",
        tool_calls(ToolCall("write_file", {"path": "draft.md", "content": "# Draft\n"})),
        Sleep(60, Text("never said")),
    )
    worker_id = await new_worker(api.client)
    body = {"input": "draft it", "workerId": worker_id, "taskId": "t-draft"}
    blocked = asyncio.create_task(api.client.post("/api/tasks", json=body))
    await _until(lambda: len(llm.requests) == 2)
    cancelled = await _cancel(api, "t-draft")
    answer = (await blocked).json()

    assert [f["filename"] for f in answer["files"]] == ["draft.md"]
    download = await api.client.get(answer["files"][0]["url"])
    assert download.content == b"# Draft\n"
    assert answer["usage"]["credits"] >= 2  # one model request's tokens and one tool call
    assert cancelled["task"]["totals"]["credits"] == answer["usage"]["credits"]


@pytest.mark.node
async def test_a_turn_cancelled_before_its_run_listens_never_starts(
    tmp_path: Path, llm: FakeLLM
) -> None:
    async with kennel_api(settings_for(tmp_path, llm), with_runner=False) as api:
        worker_id = await new_worker(api.client)
        submitted = await _queue(api, "too late", worker_id, "t-early")
        [job] = await claim_turns(api.kennel.store, "me", 1, _now(api), _lease())
        # The cancel lands between the claim and the run: no run hears it.
        cancelled = await api.kennel.store.runs.cancel_task(submitted.task.key, _now(api))
        assert cancelled.running == [job.turn_id]

        await api.kennel.turns.run(job.job)
        assert llm.requests == []
        found = (await api.client.get("/api/tasks/t-early")).json()
        assert found["task"]["status"] == "aborted"
        assert found["turns"][0]["status"] == "aborted"
        state = (await api.client.get(f"/api/workers/{worker_id}")).json()
        assert state["metadata"]["incompleteReason"] == "cancelled"
        stream = await api.client.get(f"/api/workers/{worker_id}", params={"stream": "true"})
        check = validate_ui_stream(stream.text)
        assert check.ok, check.error
