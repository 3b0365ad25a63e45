"""`KENNEL_MODEL` is checked when the server starts: a name no provider serves stops it with the
fix, a provider without its key is a warning, and the model in use is logged."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from fakellm import FakeLLM
from kennel.agent.models import ModelCatalog
from kennel.config import Settings
from kennel.errors import ModelNotConfiguredError
from kennelapp import Api
from server import KENNEL, free_port


def _catalog_messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "kennel.agent.models" and record.levelno == level
    ]


def test_serve_refuses_to_start_on_a_malformed_model(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "KENNEL_DATA_DIR": str(tmp_path), "KENNEL_MODEL": "gpt-4.1-mini"}
    result = subprocess.run(
        [str(KENNEL), "serve", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "KENNEL_MODEL='gpt-4.1-mini'" in output
    assert "KENNEL_MODEL=openai-chat:gpt-4.1-mini" in output  # what a valid value looks like
    assert "Known providers: openai-chat, openai, anthropic" in output
    assert "Uvicorn running" not in output and "Application startup" not in output
    assert f"database: sqlite+aiosqlite:///{tmp_path / 'kennel.db'}" in output
    assert not (tmp_path / "kennel.db").exists()  # stopped before touching the database


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("gpt-4.1-mini", "Unknown model"),
        ("nonsense:thing", "Unknown provider: nonsense"),
        ("openai:", "no model is named after 'openai:'"),
        ("cohere:command-r", "library of the 'cohere' provider is not installed"),
    ],
)
async def test_names_no_provider_serves_stop_the_start(name: str, reason: str) -> None:
    catalog = ModelCatalog(Settings(model=name))
    with pytest.raises(ModelNotConfiguredError, match=reason) as raised:
        await catalog.check_setting()
    assert raised.value.message.startswith(f"KENNEL_MODEL={name!r} is not a model Kennel can use")
    await catalog.aclose()


async def test_a_provider_without_its_key_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    catalog = ModelCatalog(Settings(model="anthropic:claude-sonnet-4-5"))
    with caplog.at_level(logging.INFO, logger="kennel.agent.models"):
        await catalog.check_setting()
    [warning] = _catalog_messages(caplog, logging.WARNING)
    assert "KENNEL_MODEL=anthropic:claude-sonnet-4-5 cannot be used yet" in warning
    assert "Set the `ANTHROPIC_API_KEY` environment variable" in warning
    assert "AnthropicProvider" not in warning  # library advice, not an operator's
    assert _catalog_messages(caplog, logging.INFO) == []
    await catalog.aclose()


async def test_no_model_at_all_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    catalog = ModelCatalog(Settings(model=None))
    with caplog.at_level(logging.WARNING, logger="kennel.agent.models"):
        await catalog.check_setting()
    [warning] = _catalog_messages(caplog, logging.WARNING)
    assert warning.startswith("KENNEL_MODEL is not set")


async def test_the_model_in_use_is_logged(llm: FakeLLM, caplog: pytest.LogCaptureFixture) -> None:
    base_url = llm.base_url.replace("http://", "http://user:hunter2@")
    for name, api in [
        ("openai-chat:fake-model", "Chat Completions API"),
        ("openai:fake-model", "OpenAI Responses API"),
    ]:
        settings = Settings(model=name, openai_base_url=base_url, openai_api_key="sk-secret")
        catalog = ModelCatalog(settings)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kennel.agent.models"):
            await catalog.check_setting()
        [line] = _catalog_messages(caplog, logging.INFO)
        assert line.startswith(f"model in use: KENNEL_MODEL={name}, {api} at {llm.base_url}/")
        assert "hunter2" not in line and "sk-secret" not in line
        assert ("openai-chat: instead" in line) == name.startswith("openai:")
        await catalog.aclose()


@pytest.mark.parametrize("model", ["cohere:command-r", "openai:"])
async def test_a_worker_model_no_provider_serves_is_a_400(api: Api, model: str) -> None:
    response = await api.client.post("/api/workers", json={"model": model})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_model"
