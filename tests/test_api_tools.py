"""What a worker's tools leave behind, seen through the API: files and sources (spec §16.4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from aisdk import validate_ui_stream
from fakellm import FakeLLM, Text, ToolCall, tool_calls
from kennel.models import Source
from kennel.storage.sources import record_task_sources, task_sources_of
from kennelapp import Api, new_worker


def _chunks(sse: str) -> list[dict]:
    return [
        json.loads(line[6:])
        for line in sse.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


async def test_files_the_worker_writes_are_listed_and_downloadable(api: Api, llm: FakeLLM) -> None:
    worker_id = await new_worker(api.client, instructions="You write reports.")
    report = "# Report\n\nÆble — naïve café ✓\n"
    llm.script(
        "write a report",
        tool_calls(ToolCall("write_file", {"path": "reports/q1.md", "content": report})),
        Text("The report is in reports/q1.md."),
    )
    response = await api.client.post(
        "/api/tasks",
        json={"input": "write a report", "workerId": worker_id, "taskId": "tsk_files"},
    )
    worker = response.json()
    url = f"http://kennel.test/api/workers/{worker_id}/files/reports/q1.md"
    assert worker["files"] == [
        {
            "filename": "reports/q1.md",
            "mediaType": "text/markdown",
            "url": url,
            "size": len(report.encode()),
        }
    ]
    download = await api.client.get(url)
    assert download.status_code == 200 and download.content == report.encode()
    assert worker["usage"]["credits"] >= 2  # tokens, plus one credit for the tool call

    llm.script(
        "now delete it",
        tool_calls(ToolCall("delete_file", {"path": "reports/q1.md"})),
        Text("gone"),
    )
    follow_up = await api.client.post(
        "/api/tasks", json={"input": "now delete it", "taskId": "tsk_files"}
    )
    assert follow_up.json()["files"] == []
    assert (await api.client.get(url)).status_code == 404


@pytest.mark.node
async def test_a_written_file_is_streamed_as_a_file_chunk(api: Api, llm: FakeLLM) -> None:
    worker_id = await new_worker(api.client, instructions="You write.")
    llm.script(
        "note this",
        tool_calls(ToolCall("write_file", {"path": "note.txt", "content": "hi"})),
        Text("noted"),
    )
    response = await api.client.post(
        "/api/tasks", json={"input": "note this", "workerId": worker_id, "stream": True}
    )
    check = validate_ui_stream(response.text)
    assert check.ok, check.error
    chunks = _chunks(response.text)
    types = [c["type"] for c in chunks]
    file_chunk = chunks[types.index("file")]
    assert file_chunk == {
        "type": "file",
        "url": f"http://kennel.test/api/workers/{worker_id}/files/note.txt",
        "mediaType": "text/plain",
    }
    assert types.index("tool-output-available") < types.index("file") < types.index("text-start")
    worker = chunks[-1]["data"]
    assert [p["type"] for p in worker["messages"][-1]["parts"]].count("file") == 1


async def test_sources_keep_their_first_place_and_gain_a_missing_title(api: Api) -> None:
    await api.client.post("/api/tasks", json={"input": "hi", "taskId": "tsk_s"})
    organization_id = (await api.client.get("/api/tasks/tsk_s")).json()["task"]["organizationId"]
    store = api.kennel.store
    task = await store.tasks.get(organization_id, "tsk_s")
    assert task is not None

    async def record(*sources: Source) -> None:
        def work(conn: sa.Connection) -> None:
            record_task_sources(conn, task.key, sources, datetime.now(UTC))

        await store.database.write(work)

    await record(Source("src_a", "https://a.test/", None), Source("src_b", "https://b.test/", "B"))
    await record(Source("src_c", "https://c.test/", "C"), Source("src_a", "https://a.test/", "A"))
    found = await store.database.read(lambda conn: task_sources_of(conn, task.key))
    assert found == [
        Source("src_a", "https://a.test/", "A"),
        Source("src_b", "https://b.test/", "B"),
        Source("src_c", "https://c.test/", "C"),
    ]
    worker = (await api.client.get("/api/tasks/tsk_s")).json()
    state = (await api.client.get(f"/api/workers/{worker['task']['workerId']}")).json()
    assert state["sources"][0] == {
        "id": "src_a",
        "type": "url",
        "url": "https://a.test/",
        "title": "A",
    }
