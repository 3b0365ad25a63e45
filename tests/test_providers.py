"""Model providers (issue 3, spec §16.21): the Anthropic path and per-worker models, against
the fake model server (which speaks Chat Completions and Anthropic's Messages API)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fakellm import FakeLLM, Text, ToolCall, tool_calls
from kennel.agent.models import ModelCatalog
from kennel.errors import ModelNotConfiguredError
from kennelapp import Api, kennel_api, new_worker, settings_for

ANTHROPIC = "anthropic:claude-test-1"


@pytest.fixture
def anthropic_env(llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", llm.base_url.removesuffix("/v1"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


@pytest.fixture
async def claude(tmp_path: Path, llm: FakeLLM, anthropic_env: None) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, llm, model=ANTHROPIC)) as api:
        yield api


async def _task(api: Api, **body: Any) -> Any:
    response = await api.client.post("/api/tasks", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_task_runs_on_anthropic(claude: Api, llm: FakeLLM) -> None:
    worker_id = await new_worker(claude.client, instructions="You answer briefly.")
    first = await _task(claude, input="hello claude", workerId=worker_id)
    assert first["output_text"] == "echo: hello claude"
    assert first["usage"]["credits"] >= 1

    follow_up = await _task(
        claude, input="and again", workerId=worker_id, taskId=first["metadata"]["taskId"]
    )
    assert follow_up["output_text"] == "echo: and again"
    [*_, request] = llm.anthropic_requests
    assert request["model"] == "claude-test-1"
    assert "You answer briefly." in str(request["system"])
    said = [m["content"] for m in request["messages"]]
    assert "hello claude" in str(said[0]) and "echo: hello claude" in str(said[1])
    assert llm.requests == []  # nothing went to the Chat Completions endpoint


async def test_anthropic_streams_and_calls_tools(claude: Api, llm: FakeLLM) -> None:
    llm.script(
        "what files",
        tool_calls(ToolCall("list_files", {})),
        tool_calls(ToolCall("write_file", {"path": "notes.txt", "content": "hi"})),
        Text("done: nothing there, so I wrote notes.txt"),
    )
    worker_id = await new_worker(claude.client)
    async with claude.client.stream(
        "POST", "/api/tasks", json={"input": "what files?", "workerId": worker_id, "stream": True}
    ) as response:
        assert response.status_code == 200
        stream = "".join([chunk async for chunk in response.aiter_text()])
    assert '"type":"tool-input-available"' in stream and '"toolName":"list_files"' in stream
    assert '"type":"text-delta"' in stream
    state = (await claude.client.get(f"/api/workers/{worker_id}")).json()
    assert state["output_text"] == "done: nothing there, so I wrote notes.txt"
    assert [f["filename"] for f in state["files"]] == ["notes.txt"]
    assert len(llm.anthropic_requests) == 3
    assert llm.anthropic_requests[0]["stream"] is True


async def test_a_worker_model_overrides_the_default(
    tmp_path: Path, llm: FakeLLM, anthropic_env: None
) -> None:
    async with kennel_api(settings_for(tmp_path, llm)) as api:  # default: openai-chat
        on_claude = await new_worker(api.client, model=ANTHROPIC)
        on_default = await new_worker(api.client)
        template = (await api.client.get(f"/api/workers/{on_claude}")).json()
        assert template["metadata"] == {} and template["id"] == on_claude

        assert (await _task(api, input="one", workerId=on_claude))["output_text"] == "echo: one"
        assert len(llm.anthropic_requests) == 1 and llm.requests == []
        assert (await _task(api, input="two", workerId=on_default))["output_text"] == "echo: two"
        assert len(llm.anthropic_requests) == 1 and len(llm.requests) == 1


async def test_an_unusable_model_is_a_clear_error_naming_what_to_set(
    tmp_path: Path, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    async with kennel_api(settings_for(tmp_path, llm)) as api:
        # A provider the server has no key for: its configuration, said plainly.
        response = await api.client.post("/api/workers", json={"model": ANTHROPIC})
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "model_not_configured"
        assert "ANTHROPIC_API_KEY" in response.json()["error"]

        # A name no provider knows: the caller's mistake.
        response = await api.client.post("/api/workers", json={"model": "nonsense:model-x"})
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_model"
        assert "'nonsense:model-x'" in response.json()["error"]
        response = await api.client.post(
            "/api/tasks", json={"input": "hi", "workerId": await new_worker(api.client)}
        )
        assert response.status_code == 200  # the default model is fine


@pytest.mark.parametrize(
    ("name", "variable", "value"),
    [
        ("google:gemini-2.5-flash", "GOOGLE_API_KEY", "g-test"),
        ("groq:llama-3.3-70b-versatile", "GROQ_API_KEY", "gsk-test"),
        ("mistral:mistral-large-latest", "MISTRAL_API_KEY", "m-test"),
        ("ollama:llama3.2", "OLLAMA_BASE_URL", "http://127.0.0.1:11434/v1"),
        ("openai:gpt-4.1-mini", "OPENAI_API_KEY", "sk-test"),
    ],
)
async def test_every_supported_provider_is_accepted_once_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, variable: str, value: str
) -> None:
    """Building a model makes no request: these need only their settings, not the network."""
    monkeypatch.delenv(variable, raising=False)
    catalog = ModelCatalog(settings_for(tmp_path, None))
    try:
        with pytest.raises(ModelNotConfiguredError, match=variable):
            await catalog.check(name)
        monkeypatch.setenv(variable, value)
        assert await catalog.check(name) == name
    finally:
        await catalog.aclose()
