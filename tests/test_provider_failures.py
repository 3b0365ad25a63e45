"""A provider failure tells the API caller how to fix it and the operator what happened: the
hint in `metadata.error.message`, and one WARNING line with the model, provider, URL and status."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.exceptions import (
    ModelContextWindowExceededError,
    ModelHTTPError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestTimeout,
)

from fakellm import FakeLLM
from kennel.agent.failures import classify
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime, TurnRequest, TurnResult
from kennel.config import Settings
from kennel.models import BUDGET_CAPS, Budget
from kennel.models.jobs import TURN_JOB
from kennel.services.tasks import TaskRequest
from kennelapp import Api, kennel_api, new_worker, settings_for
from server import free_port


def _request(model_name: str, text: str = "hello") -> TurnRequest:
    return TurnRequest(
        model_name=model_name,
        instructions="You are Rex.",
        output_schema=None,
        input=text,
        history=[],
        caps=BUDGET_CAPS[Budget.STANDARD],
        message_id="trn_1",
    )


async def _turn(base_url: str, model_name: str, text: str = "hello", **env: Any) -> TurnResult:
    settings = Settings(model=model_name, openai_base_url=base_url, openai_api_key="k", **env)
    catalog = ModelCatalog(settings)
    try:
        runtime = AgentRuntime(catalog, model_timeout=10)
        return await runtime.run_turn(_request(model_name, text), lambda chunk: None)
    finally:
        await catalog.aclose()


async def test_openai_on_a_chat_completions_server_says_to_use_openai_chat(llm: FakeLLM) -> None:
    result = await _turn(llm.base_url, "openai:fake-model")
    assert result.error is not None and result.error.code == "provider_error"
    message = result.error.message
    assert message.startswith("the model provider answered HTTP 404")
    assert "/responses" in message and "'openai-chat:fake-model'" in message
    assert llm.base_url not in message  # the server's address is the operator's business
    assert result.failure_detail is not None
    assert f"POST {llm.base_url}/responses" in result.failure_detail
    assert "HTTP 404" in result.failure_detail and "provider openai" in result.failure_detail


async def test_a_refused_key_names_the_key_setting_not_the_key(llm: FakeLLM) -> None:
    llm.fail("who am i", 401, "Incorrect API key provided")
    result = await _turn(llm.base_url, "openai-chat:fake-model", "who am i")
    assert result.error is not None
    assert result.error.message == (
        "the model provider answered HTTP 401: the provider refused the API key: "
        "check KENNEL_OPENAI_API_KEY (or OPENAI_API_KEY)"
    )
    assert result.failure_detail is not None
    assert "Incorrect API key provided" in result.failure_detail
    assert "chat/completions" in result.failure_detail


async def test_an_unknown_model_points_at_the_name_and_the_base_url(llm: FakeLLM) -> None:
    llm.fail("which model", 404, "The model `fake-model` does not exist")
    result = await _turn(llm.base_url, "openai-chat:fake-model", "which model")
    assert result.error is not None
    assert "'fake-model'" in result.error.message
    assert "KENNEL_OPENAI_BASE_URL" in result.error.message
    assert "does not exist" not in result.error.message  # the provider's words stay in the log


async def test_an_unreachable_provider_names_the_base_url_setting() -> None:
    result = await _turn(f"http://127.0.0.1:{free_port()}/v1", "openai-chat:fake-model")
    assert result.error is not None and result.error.code == "provider_error"
    assert result.error.message == (
        "the model provider could not be reached: could not connect to the provider: "
        "check KENNEL_OPENAI_BASE_URL (or OPENAI_BASE_URL)"
    )
    assert result.failure_detail is not None
    assert "ConnectionRefusedError" in result.failure_detail


async def test_the_url_in_the_log_has_no_query_and_no_password(llm: FakeLLM) -> None:
    base_url = llm.base_url.replace("http://", "http://user:hunter2@")
    result = await _turn(base_url + "?key=sekret", "openai:fake-model")
    assert result.failure_detail is not None
    assert "hunter2" not in result.failure_detail and "sekret" not in result.failure_detail
    assert "127.0.0.1" in result.failure_detail


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ModelRateLimitError("m", "Rate limit reached for org-Secret42"),
            "the model provider failed: the provider is rate limiting requests",
        ),
        (ModelHTTPError(429, "m", "slow down"), "answered HTTP 429: the provider is rate limiting"),
        (
            ModelQuotaExceededError("m", "insufficient_quota for org-Secret42"),
            "the model provider failed: the provider says the account's quota",
        ),
        (ModelHTTPError(403, "m"), "HTTP 403: the provider refused the API key: check GROQ_API"),
        (ModelHTTPError(502, "m", "<html>bad gateway</html>"), "problem on its side"),
        (ModelRequestTimeout("m", 300), "could not be reached: the provider did not answer"),
        (
            ModelContextWindowExceededError("m", "too long for org-Secret42"),
            "the model provider failed: the conversation no longer fits",
        ),
    ],
)
def test_hints_for_failures_the_fake_server_does_not_stage(error: Exception, expected: str) -> None:
    """Errors the SDKs would retry with back-off (or that need a real provider), built as
    pydantic-ai raises them; the provider's own words never reach the caller."""
    message = classify(error, "groq:llama-3.3").message
    assert expected in message
    assert "Secret42" not in message and "html" not in message and "slow down" not in message


@pytest.fixture
async def responses_api(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    """Kennel configured with `openai:`, against a server without the Responses API."""
    settings = settings_for(tmp_path, llm, model="openai:fake-model")
    async with kennel_api(settings) as running:
        yield running


async def test_a_failed_turn_is_logged_at_warning_and_hinted_on_the_wire(
    responses_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kennel"):
        response = await responses_api.client.post("/api/tasks", json={"input": "hello there"})
    assert response.status_code == 200
    metadata = response.json()["metadata"]
    error = metadata["error"]
    assert error["code"] == "provider_error"
    assert "use 'openai-chat:fake-model'" in error["message"]

    [line] = [
        record.getMessage()
        for record in caplog.records
        if record.name == "kennel.services.turns" and record.levelno == logging.WARNING
    ]
    assert f"turn {metadata['turnId']} of task {metadata['taskId']} failed" in line
    assert "model openai:fake-model" in line and "provider openai" in line
    assert "/v1/responses" in line and "HTTP 404" in line


async def test_a_turn_whose_model_became_unusable_is_logged_too(
    tmp_path: Path,
    llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    async with kennel_api(settings_for(tmp_path, llm), with_runner=False) as api:
        worker_id = await new_worker(api.client, model="anthropic:claude-test-1")
        principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
        request = TaskRequest(input="hello", worker_id=worker_id, task_id="t-unusable")
        submitted = await api.kennel.services.tasks.submit(principal, request)
        # The key is gone by the time the turn runs (the server restarted without it).
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        await api.kennel.catalog.aclose()
        lease = timedelta(seconds=30)
        [job] = await api.kennel.store.jobs.claim([TURN_JOB], "me", 1, datetime.now(UTC), lease)
        with caplog.at_level(logging.WARNING, logger="kennel.services.turns"):
            await api.kennel.turns.run(job)
    [line] = [r.getMessage() for r in caplog.records if r.name == "kennel.services.turns"]
    assert line.startswith(f"turn {submitted.turn.id} of task t-unusable failed: ")
    assert "ANTHROPIC_API_KEY" in line and "(model_not_configured)" in line
