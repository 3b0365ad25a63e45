"""Workspace file names, one rule for API uploads, e-mail attachments and the file tools: a name
the file system can't hold is refused (400 for an upload), and every other name is an ordinary
file, listed wherever files are listed: dotfiles too, even `.upload-x` (temporary files of atomic
writes live outside the workspaces, so they take no name in one)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fakellm import FakeLLM, Text, ToolCall, tool_calls
from kennel.files.workspace import MAX_NAME_BYTES
from kennelapp import Api, new_worker


async def _upload(api: Api, worker_id: str, *names: str, text: str = "here") -> Any:
    files = [("files", (name, f"contents of {name}".encode())) for name in names]
    return await api.client.post(
        "/api/tasks", data={"input": text, "workerId": worker_id}, files=files
    )


def _listed_by_tool(llm: FakeLLM) -> list[str]:
    """The paths in the last `list_files` result the model was sent."""
    for message in reversed(llm.requests[-1]["messages"]):
        if message["role"] == "tool":
            return [file["path"] for file in json.loads(message["content"])["files"]]
    raise AssertionError("no tool result was sent to the model")


async def test_dotfiles_are_ordinary_files(api: Api, llm: FakeLLM) -> None:
    worker_id = await new_worker(api.client)
    llm.script("what is there", tool_calls(ToolCall("list_files", {})), Text("three files"))
    names = (".upload-x", ".env", "notes/.write-draft")
    response = await _upload(api, worker_id, *names, text="what is there")
    assert response.status_code == 200, response.text
    assert sorted(file["filename"] for file in response.json()["files"]) == sorted(names)
    assert sorted(_listed_by_tool(llm)) == sorted(names)
    for name in names:
        download = await api.client.get(f"/api/workers/{worker_id}/files/{name}")
        assert download.content == f"contents of {name}".encode()

    llm.script(
        "write a dotfile",
        tool_calls(ToolCall("write_file", {"path": ".upload-y", "content": "mine"})),
        tool_calls(ToolCall("list_files", {})),
        Text("written"),
    )
    task = response.json()["metadata"]["taskId"]
    response = await api.client.post(
        "/api/tasks", json={"input": "write a dotfile", "taskId": task}
    )
    assert ".upload-y" in [file["filename"] for file in response.json()["files"]]
    assert sorted(_listed_by_tool(llm)) == sorted([*names, ".upload-y"])


@pytest.mark.parametrize(
    "name",
    ["a" * (MAX_NAME_BYTES + 1), "é" * 128, "folder/" + "b" * 300, "x/" * 600],
)
async def test_names_the_file_system_cannot_hold_are_400(api: Api, name: str) -> None:
    worker_id = await new_worker(api.client)
    response = await _upload(api, worker_id, name)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert (await api.client.get("/api/tasks")).json()["totalCount"] == 0


async def test_the_longest_names_fit(api: Api) -> None:
    worker_id = await new_worker(api.client)
    names = ("a" * MAX_NAME_BYTES, "ü" * (MAX_NAME_BYTES // 2), "d/" + "c" * MAX_NAME_BYTES)
    response = await _upload(api, worker_id, *names)
    assert response.status_code == 200, response.text
    assert len(response.json()["files"]) == 3


async def test_a_file_and_a_folder_cannot_share_a_name(api: Api, llm: FakeLLM) -> None:
    worker_id = await new_worker(api.client)
    assert (await _upload(api, worker_id, "a/b.txt")).status_code == 200
    response = await _upload(api, worker_id, "a")
    assert response.status_code == 400 and "'a' is a folder" in response.json()["error"]
    response = await _upload(api, worker_id, "a/b.txt/c")
    assert response.status_code == 400 and "'a/b.txt' is a file" in response.json()["error"]

    llm.script(
        "clash",
        tool_calls(ToolCall("write_file", {"path": "a/b.txt/c", "content": "x"})),
        Text("could not"),
    )
    response = await api.client.post("/api/tasks", json={"input": "clash", "workerId": worker_id})
    assert response.json()["output_text"] == "could not"
    tool_result = llm.requests[-1]["messages"][-1]["content"]
    assert "'a/b.txt' is a file" in tool_result
