"""A worker that searches, reads a page, writes a report with Python and answers (issue 3).

Everything is real but the model and the web: the fake model scripts the tool calls, search
is the local site's fake SearXNG, the page comes from the local site on 127.0.0.1 (allow-listed),
and the report is written by the bubblewrap sandbox.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aisdk import validate_ui_messages, validate_ui_stream
from fakellm import FakeLLM, Text, ToolCall, tool_calls
from kennelapp import Api, kennel_api, new_worker, settings_for
from website import LocalSite

REPORT = "# Kennels\n\nA kennel is a shelter for dogs (source: Kennel field guide).\n"
PROGRAM = f"open('report.md', 'w').write({REPORT!r})\nprint('report written')\n"


@pytest.fixture
async def equipped_api(
    tmp_path: Path, llm: FakeLLM, website: LocalSite, database_url: str
) -> AsyncIterator[Api]:
    settings = settings_for(
        tmp_path,
        llm,
        database_url=database_url,
        search_provider="searxng",
        searxng_url=website.url("/searxng"),
        allow_private_networks="127.0.0.1/32",
    )
    async with kennel_api(settings) as running_api:
        yield running_api


def _chunks(sse: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in sse.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def _steps(chunks: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The stream reduced to what happened: tool inputs and outputs, sources, files, text."""
    names: dict[str, str] = {}
    steps: list[tuple[str, ...]] = []
    for chunk in chunks:
        kind = chunk["type"]
        if kind == "tool-input-available":
            names[chunk["toolCallId"]] = chunk["toolName"]
            steps.append(("call", chunk["toolName"]))
        elif kind in ("tool-output-available", "tool-output-error"):
            steps.append((kind.removeprefix("tool-"), names[chunk["toolCallId"]]))
        elif kind in ("source-url", "file", "text-start", "finish", "data-worker"):
            steps.append((kind,))
    return steps


@pytest.mark.node
async def test_a_worker_researches_writes_a_report_and_answers(
    equipped_api: Api, llm: FakeLLM, website: LocalSite
) -> None:
    api, article = equipped_api, website.url("/article.html")
    worker_id = await new_worker(api.client, instructions="You research and write reports.")
    llm.script(
        "kennel report",
        tool_calls(ToolCall("web_search", {"query": "what is a kennel"})),
        tool_calls(ToolCall("web_fetch", {"url": article})),
        tool_calls(ToolCall("run_python", {"code": PROGRAM})),
        Text("The report is in report.md."),
    )
    response = await api.client.post(
        "/api/tasks",
        json={"input": "kennel report", "workerId": worker_id, "stream": True},
    )

    check = validate_ui_stream(response.text)
    assert check.ok, check.error
    chunks = _chunks(response.text)
    assert _steps(chunks) == [
        ("call", "web_search"),
        ("output-available", "web_search"),
        ("call", "web_fetch"),
        ("output-available", "web_fetch"),
        ("source-url",),
        ("call", "run_python"),
        ("output-available", "run_python"),
        ("file",),
        ("text-start",),
        ("finish",),
        ("data-worker",),
    ]
    search_output = next(c for c in chunks if c["type"] == "tool-output-available")["output"]
    assert search_output["results"][0]["title"] == "SearXNG kennel"

    worker = chunks[-1]["data"]
    file_url = f"http://kennel.test/api/workers/{worker_id}/files/report.md"
    assert (
        worker["status"] == "completed" and worker["output_text"] == "The report is in report.md."
    )
    assert worker["metadata"].get("incompleteReason") is None
    [source] = worker["sources"]
    assert source["url"] == article and source["title"] == "Kennel field guide"
    assert source["type"] == "url" and source["id"].startswith("src_")
    assert next(c for c in chunks if c["type"] == "source-url")["sourceId"] == source["id"]
    assert worker["files"] == [
        {
            "filename": "report.md",
            "mediaType": "text/markdown",
            "url": file_url,
            "size": len(REPORT.encode()),
        }
    ]
    assert next(c for c in chunks if c["type"] == "file") == {
        "type": "file",
        "url": file_url,
        "mediaType": "text/markdown",
    }
    download = await api.client.get(file_url)
    assert download.status_code == 200 and download.content == REPORT.encode()

    task_id = worker["metadata"]["taskId"]
    [turn] = (await api.client.get(f"/api/tasks/{task_id}")).json()["turns"]
    tokens = turn["inputTokens"] + turn["outputTokens"]
    assert tokens > 0
    assert worker["usage"]["credits"] == turn["credits"] == math.ceil(tokens / 1000) + 3
    assert worker["usage"]["durationMs"] >= 0

    parts = [p["type"] for p in worker["messages"][-1]["parts"]]
    assert [p for p in parts if p.startswith("tool-")] == [
        "tool-web_search",
        "tool-web_fetch",
        "tool-run_python",
    ]
    assert "source-url" in parts and "file" in parts
    assert validate_ui_messages(worker["messages"]).ok

    # A later turn that reads the same page again adds no second source.
    llm.script(
        "read it again",
        tool_calls(ToolCall("web_fetch", {"url": article})),
        Text("Same page."),
    )
    again = await api.client.post("/api/tasks", json={"input": "read it again", "taskId": task_id})
    assert again.json()["sources"] == worker["sources"]
