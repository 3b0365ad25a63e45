"""The access log: one line per request (method, path, status, duration, key prefix), written
when the response ends, with no key or query secret in it, and a setting that turns it off."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fakellm import FakeLLM, Sleep, Text
from kennel.api.access import masked_query
from kennel.services.auth import key_prefix
from kennelapp import Api, kennel_api, settings_for
from server import KennelServer

LINE = re.compile(
    r"^(?P<method>[A-Z]+) (?P<target>\S+) (?P<status>\d{3}) (?P<ms>\d+)ms key=(?P<key>\S+)$"
)


@pytest.fixture
async def sqlite_api(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, llm)) as running:
        yield running


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    lines = [r.getMessage() for r in caplog.records if r.name == "kennel.access"]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return [match for match in matches if match is not None]


async def test_each_request_is_one_line_with_the_key_prefix_never_the_key(
    sqlite_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    key = sqlite_api.key
    with caplog.at_level(logging.DEBUG):
        assert (await sqlite_api.client.get("/api/workers")).status_code == 200
        assert (await sqlite_api.client.get("/api/workers/wrk_nope")).status_code == 404
        created = await sqlite_api.client.post("/api/tasks", json={"input": "hello"})
        assert created.status_code == 200
        async with httpx.AsyncClient(
            transport=sqlite_api.client._transport, base_url="http://kennel.test"
        ) as anonymous:
            assert (await anonymous.get("/api/workers")).status_code == 401
            headers = {"Authorization": "Bearer sk-live-0123456789abcdef"}
            assert (await anonymous.get("/api/workers", headers=headers)).status_code == 401

    lines = _access_lines(caplog)
    assert [(m["method"], m["target"], m["status"]) for m in lines] == [
        ("GET", "/api/workers", "200"),
        ("GET", "/api/workers/wrk_nope", "404"),
        ("POST", "/api/tasks", "200"),
        ("GET", "/api/workers", "401"),
        ("GET", "/api/workers", "401"),
    ]
    assert [m["key"] for m in lines] == [key_prefix(key) + "…"] * 3 + ["-", "?"]
    every_line = "\n".join(record.getMessage() for record in caplog.records)
    assert key not in every_line and key[8:20] not in every_line
    assert "sk-live" not in every_line


async def test_secrets_in_the_query_are_masked(
    sqlite_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    query = f"?token=abc123&api_key=zzz&page=2&q={sqlite_api.key}"
    with caplog.at_level(logging.INFO, logger="kennel.access"):
        await sqlite_api.client.get("/api/workers" + query)
    [line] = _access_lines(caplog)
    assert line["target"] == "/api/workers?token=…&api_key=…&page=2&q=…"


def test_masked_query_keeps_what_is_not_a_secret() -> None:
    assert masked_query("workerId=wrk_1&stream=true") == "workerId=wrk_1&stream=true"
    assert masked_query("flag&password=x&sig=y") == "flag&password=…&sig=…"
    assert masked_query("hook=whk_abc&x=hdg%5Fabc") == "hook=…&x=…"


async def test_a_stream_is_logged_when_it_ends(
    sqlite_api: Api, llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    llm.script("slow stream", Sleep(0.3, Text("done")))
    with caplog.at_level(logging.INFO, logger="kennel.access"):
        response = await sqlite_api.client.post(
            "/api/tasks", json={"input": "slow stream", "stream": True}
        )
    assert response.text.endswith("data: [DONE]\n\n")
    [line] = _access_lines(caplog)
    assert (line["target"], line["status"]) == ("/api/tasks", "200")
    assert int(line["ms"]) >= 300  # the whole stream, not the time to its headers


async def test_the_access_log_can_be_turned_off(
    tmp_path: Path, llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    async with kennel_api(settings_for(tmp_path, llm, access_log=False)) as api:
        with caplog.at_level(logging.INFO, logger="kennel.access"):
            assert (await api.client.get("/api/workers")).status_code == 200
    assert [r for r in caplog.records if r.name == "kennel.access"] == []


def test_a_served_kennel_logs_its_model_and_one_line_per_request(
    tmp_path: Path, llm: FakeLLM
) -> None:
    server = KennelServer(tmp_path, llm)
    key = server.create_key()
    server.start()
    try:
        headers = {"Authorization": f"Bearer {key}"}
        response = httpx.get(f"{server.base_url}/api/workers?page=1", headers=headers, timeout=30)
        assert response.status_code == 200
    finally:
        server.stop()
    log = server.log.read_text()
    assert "model in use: KENNEL_MODEL=openai-chat:fake-model, Chat Completions API at " in log
    requests = [line for line in log.splitlines() if "/api/workers?page=1" in line]
    assert len(requests) == 1, log  # uvicorn's own access log stays off
    assert "kennel.access" in requests[0] and requests[0].endswith(f"key={key_prefix(key)}…")
    assert key not in log
