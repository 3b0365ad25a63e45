"""A server killed with SIGKILL mid-turn loses nothing it acknowledged: a turn taken over goes on
from its last finished step, crashes are not the turn's failures, and only a poison turn ends."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aisdk import validate_ui_stream
from databases import postgres_url
from fakellm import FakeLLM, Sleep, Text, ToolCall, tool_calls
from server import KennelServer

pytestmark = pytest.mark.timeout(240)

COUNTER = "open('count.txt', 'a').write('1')"


def _post_in_background(server: KennelServer, key: str, body: dict[str, object]) -> None:
    def post() -> None:
        # The server dies under this request: that is the point.
        with contextlib.suppress(httpx.TransportError):
            httpx.post(
                f"{server.base_url}/api/tasks",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=120,
            )

    threading.Thread(target=post, daemon=True).start()


def _turn_calls(llm: FakeLLM, text: str) -> list[dict[str, Any]]:
    """The model calls of the turn whose input is `text` (not the side request for a title)."""
    return [
        request
        for request in list(llm.requests)
        if "short title" not in str(request["messages"][0].get("content"))
        and any(m["role"] == "user" and m.get("content") == text for m in request["messages"])
    ]


def _after_tools(request: dict[str, Any]) -> bool:
    return any(message["role"] == "tool" for message in request["messages"])


def _until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _get(server: KennelServer, key: str, path: str, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{server.base_url}{path}", headers=headers, params=params, timeout=30)


def _task_when_done(server: KennelServer, key: str, task_id: str) -> dict[str, Any]:
    def done() -> bool:
        found = _get(server, key, f"/api/tasks/{task_id}")
        return found.status_code == 200 and found.json()["task"]["status"] in (
            "completed",
            "error",
        )

    _until(done, f"task {task_id} to end", seconds=90)
    return dict(_get(server, key, f"/api/tasks/{task_id}").json())


@contextlib.contextmanager
def _sync_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for a test that is not async itself."""
    manager = postgres_url()
    loop = asyncio.new_event_loop()
    try:
        url = loop.run_until_complete(manager.__aenter__())
        try:
            yield url
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path, llm: FakeLLM) -> Iterator[KennelServer]:
    """A server on SQLite, or on PostgreSQL for tests parametrized with `database="postgres"`."""
    env = {"KENNEL_JOB_MAX_ATTEMPTS": "2"}
    with contextlib.ExitStack() as stack:
        if getattr(request, "param", "sqlite") == "postgres":
            env["KENNEL_DATABASE_URL"] = stack.enter_context(_sync_postgres_url())
            # Another process may hold a PostgreSQL job: a dead one's is taken back once its
            # lease runs out.
            env["KENNEL_JOB_LEASE_SECONDS"] = "3"
        kennel = KennelServer(tmp_path, llm, **env)
        try:
            yield kennel
        finally:
            kennel.stop()


@pytest.mark.node
@pytest.mark.parametrize(
    ("server", "live"),
    [
        ("sqlite", False),
        ("sqlite", True),
        pytest.param("postgres", False, marks=pytest.mark.postgres),
    ],
    indirect=["server"],
)
def test_a_turn_killed_between_steps_goes_on_from_its_last_step(
    server: KennelServer, llm: FakeLLM, live: bool
) -> None:
    key = server.create_key()
    server.start()
    text = "count then answer"
    counting = tool_calls(ToolCall("run_python", {"code": COUNTER}, id="c1"))
    llm.script(text, counting, Sleep(60, Text("too late")))
    _post_in_background(server, key, {"input": text, "taskId": "tsk_steps", "stream": live})
    _until(lambda: any(map(_after_tools, _turn_calls(llm, text))), "the second model call")

    server.kill()
    llm.reset()
    llm.script(text, counting, Text("finished after the crash"))
    server.start()

    done = _task_when_done(server, key, "tsk_steps")
    assert done["task"]["status"] == "completed"
    [turn] = done["turns"]
    assert turn["outputText"] == "finished after the crash"
    # Only the step in flight ran again: one model call after the restart, carrying the tool's
    # result from before the crash; the tool itself ran once.
    [again] = _turn_calls(llm, text)
    assert _after_tools(again)
    worker_id = done["task"]["workerId"]
    counted = _get(server, key, f"/api/workers/{worker_id}/files/count.txt")
    assert counted.status_code == 200 and counted.text == "1"

    stream = _get(server, key, f"/api/workers/{worker_id}", stream="true", taskId="tsk_steps")
    ids = [int(found) for found in re.findall(r"^id: (\d+)$", stream.text, flags=re.M)]
    assert ids == sorted(set(ids)), "each chunk once, in order"
    check = validate_ui_stream(stream.text)
    assert check.ok, check.error
    [message] = check.messages
    texts = [part["text"] for part in message["parts"] if part["type"] == "text"]
    assert texts[-1] == "finished after the crash"
    tools = [part for part in message["parts"] if part["type"] == "tool-run_python"]
    assert [part["state"] for part in tools] == ["output-available"]

    # Usage and credits count every answered request once, the one from before the crash too:
    # the same turn run without a crash costs the same.
    llm.script(text, counting, Text("finished after the crash"))
    reference = httpx.post(
        f"{server.base_url}/api/tasks",
        json={"input": text, "taskId": "tsk_reference", "workerId": worker_id},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    [uncrashed] = _task_when_done(server, key, "tsk_reference")["turns"]
    assert reference.status_code == 200
    usage = ("inputTokens", "outputTokens", "credits")
    assert [turn[name] for name in usage] == [uncrashed[name] for name in usage]
    assert turn["credits"] > 0


ON_BOTH = pytest.mark.parametrize(
    "server", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@ON_BOTH
def test_three_kills_in_a_row_end_with_every_turn_completed(
    server: KennelServer, llm: FakeLLM
) -> None:
    llm.latency = 4.0
    try:
        key = server.create_key()
        server.start()
        tasks = [f"tsk_many_{number:02d}" for number in range(36)]
        for task_id in tasks:
            _post_in_background(server, key, {"input": f"turn {task_id}", "taskId": task_id})
        seen = 0
        for _ in range(3):
            # Counted between the kill and the start: a restarted server may send its recovered
            # turns to the model before `start` returns.
            _until(lambda seen=seen: len(llm.requests) > seen, "turns to reach the model")
            time.sleep(1.5)
            server.kill()
            seen = len(llm.requests)
            server.start()
        llm.latency = 0.0
        for task_id in tasks:
            done = _task_when_done(server, key, task_id)
            assert done["task"]["status"] == "completed", done
    finally:
        server.stop()


@ON_BOTH
def test_a_turn_running_in_every_crash_while_others_finish_ends_in_error(
    server: KennelServer, llm: FakeLLM
) -> None:
    try:
        key = server.create_key()
        llm.script("poison pill", Sleep(60, Text("never")))
        server.start()
        _post_in_background(server, key, {"input": "poison pill", "taskId": "tsk_poison"})
        for crash in (1, 2):
            _until(lambda crash=crash: len(_turn_calls(llm, "poison pill")) >= crash, "poison")
            quick = f"tsk_quick_{crash}"
            _post_in_background(server, key, {"input": f"quick {crash}", "taskId": quick})
            assert _task_when_done(server, key, quick)["task"]["status"] == "completed"
            server.kill()
            server.start()

        done = _task_when_done(server, key, "tsk_poison")
        assert done["task"]["status"] == "error"
        worker = _get(server, key, f"/api/workers/{done['task']['workerId']}").json()
        assert worker["metadata"]["error"]["code"] == "interrupted"
        assert "interrupted 2 times in a row" in worker["metadata"]["error"]["message"]
        assert worker["status"] == "completed" and worker["running"] is False
        # It was run twice and not a third time.
        assert len(_turn_calls(llm, "poison pill")) == 2
    finally:
        server.stop()
