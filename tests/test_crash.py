"""A server killed with SIGKILL mid-turn loses nothing it acknowledged (issue: durable runner)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakellm import FakeLLM, Sleep, Text
from server import KennelServer


@pytest.fixture
def server(tmp_path: Path, llm: FakeLLM) -> Iterator[KennelServer]:
    kennel = KennelServer(tmp_path, llm, KENNEL_JOB_MAX_ATTEMPTS="2")
    try:
        yield kennel
    finally:
        kennel.stop()


def _post_in_background(server: KennelServer, key: str, body: dict[str, object]) -> None:
    def post() -> None:
        # The server dies under this request: that is the point.
        with contextlib.suppress(httpx.TransportError):
            httpx.post(
                f"{server.base_url}/api/tasks",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )

    threading.Thread(target=post, daemon=True).start()


def _is_turn_call(request: dict[str, Any], text: str) -> bool:
    """A model call of the turn itself, not the side request that writes the task title."""
    system = str(request["messages"][0].get("content"))
    return request["messages"][-1].get("content") == text and "short title" not in system


def _wait_for_model_call(llm: FakeLLM, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        calls = [r for r in list(llm.requests) if _is_turn_call(r, text)]
        if len(calls) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"the model never saw {text!r}")


def _task_when_done(server: KennelServer, key: str, task_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < deadline:
        found = httpx.get(f"{server.base_url}/api/tasks/{task_id}", headers=headers, timeout=10)
        if found.status_code == 200 and found.json()["task"]["status"] in ("completed", "error"):
            return found.json()
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def test_a_turn_interrupted_by_sigkill_runs_again_after_restart(
    server: KennelServer, llm: FakeLLM
) -> None:
    key = server.create_key()
    server.start()
    llm.script("slow job", Sleep(30, Text("too late")))
    _post_in_background(server, key, {"input": "slow job", "taskId": "tsk_crash"})
    _wait_for_model_call(llm, "slow job")

    server.kill()
    llm.reset()
    llm.script("slow job", Text("finished after the crash"))
    server.start()

    done = _task_when_done(server, key, "tsk_crash")
    assert done["task"]["status"] == "completed"
    [turn] = done["turns"]
    assert turn["outputText"] == "finished after the crash"
    worker = httpx.get(
        f"{server.base_url}/api/workers/{done['task']['workerId']}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).json()
    assert worker["output_text"] == "finished after the crash"


def test_a_turn_interrupted_on_every_attempt_ends_in_error(
    server: KennelServer, llm: FakeLLM
) -> None:
    key = server.create_key()
    llm.script("doomed job", Sleep(30, Text("never")))
    for attempt in (1, 2):
        server.start()
        if attempt == 1:
            _post_in_background(server, key, {"input": "doomed job", "taskId": "tsk_doomed"})
        _wait_for_model_call(llm, "doomed job", count=attempt)
        server.kill()
    server.start()

    done = _task_when_done(server, key, "tsk_doomed")
    assert done["task"]["status"] == "error"
    assert done["turns"][0]["status"] == "error"
    worker = httpx.get(
        f"{server.base_url}/api/workers/{done['task']['workerId']}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).json()
    assert worker["metadata"]["error"]["code"] == "interrupted"
    assert "interrupted 2 times" in worker["metadata"]["error"]["message"]
    assert worker["status"] == "completed" and worker["running"] is False
    turn_id = done["turns"][0]["id"]
    assert f"WARNING kennel.services.turns: turn {turn_id} failed: the run was interrupted 2" in (
        server.log.read_text()
    )
