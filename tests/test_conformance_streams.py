"""Streams through the official SDK 0.18 against a real `kennel serve`.

`tasks.create(stream=True)` and `workers.retrieve(stream="true")` answer `text/event-stream`.
0.18 does not parse streams: a lenient client returns the raw text, a strict one refuses it
(`APIResponseValidationError`, the text in `.body`). The text itself must satisfy the Vercel AI
SDK (`aisdk.validate_ui_stream`), end with a `data-worker` chunk and then `[DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import handinger
import pytest
from handinger.types import Worker

from aisdk import StreamCheck, validate_ui_messages, validate_ui_stream
from conformance import ADA, Kennel, new_task_id, poll_task, running_kennel, texts
from fakellm import FakeLLM, Sleep, Text
from prompts import listed

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def kennel(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM) -> Iterator[Kennel]:
    with running_kennel(tmp_path_factory.mktemp("streams"), llm) as found:
        yield found


@pytest.fixture(scope="module")
def lenient(kennel: Kennel) -> Iterator[handinger.Handinger]:
    """How 0.18 users read streams: without strict validation the SDK returns the text."""
    with kennel.client(ADA, _strict_response_validation=False) as client:
        yield client


def sse_events(text: str) -> list[tuple[int | None, str]]:
    """(id, data) of every event of an SSE body; comments (`: ping`) are skipped."""
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if lines:
            event_id = next((int(line[4:]) for line in lines if line.startswith("id: ")), None)
            data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
            events.append((event_id, data))
    return events


def checked(text: object) -> tuple[StreamCheck, Worker]:
    """The AI SDK's verdict on a stream, and the final `Worker` it carries (strictly parsed)."""
    assert isinstance(text, str)
    check = validate_ui_stream(text)
    assert check.ok, check.error
    events = sse_events(text)
    assert events[-1] == (None, "[DONE]")
    final = json.loads(events[-2][1])
    assert final["type"] == "data-worker" and events[-2][0] is None
    numbered = [event_id for event_id, _ in events if event_id is not None]
    assert numbered == sorted(set(numbered))
    return check, Worker.model_validate(final["data"])


def chunk_types(check: StreamCheck) -> list[str]:
    return [chunk["type"] for chunk in check.chunks]


@pytest.mark.node
def test_a_streamed_task_is_an_ai_sdk_stream_ending_with_the_worker(
    lenient: handinger.Handinger, llm: FakeLLM
) -> None:
    llm.script("stream me", Text("one two three"))
    worker = lenient.workers.create()
    task_id = new_task_id()
    raw = lenient.tasks.with_raw_response.create(
        input="stream me, please", stream=True, task_id=task_id, worker_id=worker.id
    )
    assert json.loads(raw.http_request.content)["stream"] is True
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert raw.headers["x-task-id"] == task_id

    check, final = checked(raw.parse())
    assert chunk_types(check)[0] == "start" and chunk_types(check)[-1] == "data-worker"
    assert texts(check.messages) == ["one two three"]
    assert (final.id, final.status, final.output_text) == (worker.id, "completed", "one two three")
    assert final.metadata["taskId"] == task_id
    assert lenient.tasks.retrieve(task_id).task.status == "completed"


@pytest.mark.node
def test_a_multipart_task_can_ask_for_a_stream(lenient: handinger.Handinger) -> None:
    # Form fields are text: `stream` arrives as "true" and must be read as a boolean.
    text = lenient.post(
        "/api/tasks",
        cast_to=str,
        body={"input": "stream with a file", "stream": True},
        files=[("files", ("note.txt", b"a note", "text/plain"))],
        options={"headers": {"Content-Type": "multipart/form-data"}},
    )
    check, final = checked(text)
    [answer] = texts(check.messages)
    echoed, note = answer.split("\n", 1)  # the model was told about the file
    assert echoed == "echo: stream with a file"
    assert [file["path"] for file in listed(note)] == ["note.txt"]
    assert [file.filename for file in final.files] == ["note.txt"]


def test_a_strict_client_refuses_streams_but_keeps_their_text(
    ada: handinger.Handinger, lenient: handinger.Handinger
) -> None:
    with pytest.raises(handinger.APIResponseValidationError) as caught:
        ada.tasks.create(input="strictly streamed", stream=True)
    assert caught.value.status_code == 200
    assert isinstance(caught.value.body, str) and caught.value.body.endswith("data: [DONE]\n\n")

    worker = sse_events(caught.value.body)[-2][1]
    worker_id = json.loads(worker)["data"]["id"]
    with pytest.raises(handinger.APIResponseValidationError) as caught:
        ada.workers.retrieve(worker_id, stream="true")
    assert isinstance(caught.value.body, str) and caught.value.body.endswith("data: [DONE]\n\n")
    assert isinstance(lenient.workers.retrieve(worker_id, stream="true"), str)
    # A strict client can still read a stream, unparsed, through `with_raw_response`.
    raw = ada.workers.with_raw_response.retrieve(worker_id, stream="true")
    assert raw.text().endswith("data: [DONE]\n\n")


@pytest.mark.node
def test_the_worker_stream_replays_every_turn_of_the_latest_task(
    lenient: handinger.Handinger,
) -> None:
    worker = lenient.workers.create()
    task_id = new_task_id()
    lenient.tasks.create(input="first question", worker_id=worker.id, task_id=task_id)
    lenient.tasks.create(input="second question", task_id=task_id)

    text = lenient.workers.retrieve(worker.id, stream="true")
    check, final = checked(text)
    assert texts(check.messages) == ["echo: first question", "echo: second question"]
    assert final.output_text == "echo: second question"
    assert texts(final.messages) == [
        "first question",
        "echo: first question",
        "second question",
        "echo: second question",
    ]
    messages = validate_ui_messages(final.messages)
    assert messages.ok, messages.error
    # The legacy way to ask for the stream: `Accept: text/event-stream` (spec §3.2).
    by_accept = lenient.workers.retrieve(worker.id, extra_headers={"Accept": "text/event-stream"})
    assert by_accept == text


@pytest.mark.node
def test_the_worker_stream_of_the_task_named_by_taskId(lenient: handinger.Handinger) -> None:
    worker = lenient.workers.create()
    first, second = new_task_id(), new_task_id()
    lenient.tasks.create(input="older task", worker_id=worker.id, task_id=first)
    lenient.tasks.create(input="newer task", worker_id=worker.id, task_id=second)

    check, final = checked(
        lenient.workers.retrieve(worker.id, stream="true", extra_query={"taskId": first})
    )
    assert texts(check.messages) == ["echo: older task"]
    assert final.metadata["taskId"] == first


@pytest.mark.node
def test_the_worker_stream_follows_a_running_turn_to_its_end(
    lenient: handinger.Handinger, llm: FakeLLM
) -> None:
    llm.script("think slowly", Sleep(1.5, Text("a late answer")))
    worker = lenient.workers.create()
    task_id = new_task_id()
    with ThreadPoolExecutor(1) as pool:
        blocking = pool.submit(
            lenient.tasks.create, input="think slowly", worker_id=worker.id, task_id=task_id
        )
        poll_task(lenient, task_id, ("running",))
        check, final = checked(lenient.workers.retrieve(worker.id, stream="true"))
        assert blocking.result(timeout=30).output_text == "a late answer"
    assert texts(check.messages) == ["a late answer"]
    assert (final.status, final.running, final.output_text) == ("completed", False, "a late answer")


@pytest.mark.node
def test_a_failed_run_streams_an_error_then_finish(
    lenient: handinger.Handinger, llm: FakeLLM
) -> None:
    llm.fail("explode", 400, "secret provider detail")
    check, final = checked(lenient.tasks.create(input="explode in a stream", stream=True))
    errors = [chunk for chunk in check.chunks if chunk["type"] == "error"]
    assert len(errors) == 1 and "secret" not in errors[0]["errorText"]
    finish: dict[str, Any] = next(c for c in check.chunks if c["type"] == "finish")
    assert finish.get("finishReason") == "error"
    assert chunk_types(check).index("error") < chunk_types(check).index("finish")
    assert (final.status, final.running) == ("completed", False)
    error = final.metadata["error"]
    assert isinstance(error, dict) and error["code"] == "provider_error"
