"""Files handed in with a turn: the model is told about them in that turn and the next ones,
and `Worker.messages` shows them on the user's message (spec §5, §16.4, §16.15)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aisdk import validate_ui_messages
from fakellm import FakeLLM, Sleep, Text
from kennelapp import Api, kennel_api, new_worker, settings_for
from prompts import listed, requests_for, user_parts

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8
CSV = b"dog,kibble\nRex,300\n"
FILES = [
    ("files", ("report.pdf", PDF, "application/pdf")),
    ("files[]", ("data/rations.csv", CSV, "text/csv")),
]


async def test_the_model_is_told_about_uploaded_files(api: Api, llm: FakeLLM) -> None:
    worker_id = await new_worker(api.client)
    response = await api.client.post(
        "/api/tasks",
        data={"input": "Read the attached report", "workerId": worker_id, "taskId": "tsk_up"},
        files=FILES,
    )
    assert response.status_code == 200, response.text

    [request] = requests_for(llm, "Read the attached report")
    text, note = user_parts(request)
    assert "read_file" in note and "/workspace" in note
    assert listed(note) == [
        {
            "name": "report.pdf",
            "mediaType": "application/pdf",
            "sizeBytes": len(PDF),
            "path": "report.pdf",
        },
        {
            "name": "rations.csv",
            "mediaType": "text/csv",
            "sizeBytes": len(CSV),
            "path": "data/rations.csv",
        },
    ]
    worker = response.json()
    assert worker["output_text"] == f"echo: {text}\n{note}"
    base = f"http://kennel.test/api/workers/{worker_id}/files"
    assert worker["messages"][0]["parts"] == [
        {
            "type": "file",
            "mediaType": "application/pdf",
            "filename": "report.pdf",
            "url": f"{base}/report.pdf",
        },
        {
            "type": "file",
            "mediaType": "text/csv",
            "filename": "data/rations.csv",
            "url": f"{base}/data/rations.csv",
        },
        {"type": "text", "text": "Read the attached report"},
    ]
    task = (await api.client.get("/api/tasks/tsk_up")).json()
    assert task["turns"][0]["input"] == "Read the attached report"

    # A follow-up turn sees the note in its history; its own message has no files.
    follow_up = await api.client.post(
        "/api/tasks", json={"input": "And the totals?", "taskId": "tsk_up"}
    )
    [later] = requests_for(llm, "And the totals?")
    assert user_parts(later) == ["And the totals?"]
    first_user = next(m for m in later["messages"] if m["role"] == "user")
    assert [part["text"] for part in first_user["content"]] == [text, note]
    messages = follow_up.json()["messages"]
    assert messages[2]["parts"] == [{"type": "text", "text": "And the totals?"}]


@pytest.mark.node
async def test_messages_with_files_pass_the_ai_sdk_validation(api: Api) -> None:
    response = await api.client.post(
        "/api/tasks", data={"input": "Look at these", "stream": "false"}, files=FILES
    )
    messages = response.json()["messages"]
    assert [part["type"] for part in messages[0]["parts"]] == ["file", "file", "text"]
    check = validate_ui_messages(messages)
    assert check.ok, check.error


async def test_a_turn_run_again_names_the_same_files(
    tmp_path: Path, llm: FakeLLM, database_url: str
) -> None:
    settings = settings_for(tmp_path, llm, database_url=database_url)
    llm.script("Summarise the report", Sleep(30, Text("never")))
    async with kennel_api(settings) as api:
        post = asyncio.create_task(
            api.client.post(
                "/api/tasks",
                data={"input": "Summarise the report", "taskId": "tsk_again"},
                files=FILES[:1],
            )
        )
        async with asyncio.timeout(10):
            while not requests_for(llm, "Summarise the report"):
                await asyncio.sleep(0.01)
        post.cancel()
    [first] = requests_for(llm, "Summarise the report")

    # The runner stopped and handed the turn back; the next start runs it again.
    llm.reset()
    llm.script("Summarise the report", Text("done on the next start"))
    async with kennel_api(settings) as api:
        async with asyncio.timeout(10):
            while not requests_for(llm, "Summarise the report"):
                await asyncio.sleep(0.01)
        [again] = requests_for(llm, "Summarise the report")
        assert user_parts(again) == user_parts(first)
        assert listed(user_parts(again)[1])[0]["path"] == "report.pdf"


async def test_a_name_sent_twice_is_one_file_the_last_one_sent(api: Api, llm: FakeLLM) -> None:
    response = await api.client.post(
        "/api/tasks",
        data={"input": "Which one?"},
        files=[("files", ("a.txt", b"first", "text/plain")), ("files", ("a.txt", b"2nd", None))],
    )
    assert response.status_code == 200, response.text
    [request] = requests_for(llm, "Which one?")
    assert [(f["path"], f["sizeBytes"]) for f in listed(user_parts(request)[1])] == [("a.txt", 3)]
    worker = response.json()
    assert [(f["filename"], f["size"]) for f in worker["files"]] == [("a.txt", 3)]
    assert [p["type"] for p in worker["messages"][0]["parts"]] == ["file", "text"]
