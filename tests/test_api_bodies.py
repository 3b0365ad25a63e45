"""Request bodies are read within limits: size (declared or not), nesting, characters, forms."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fakellm import FakeLLM
from kennel.jsonvalues import MAX_DEPTH
from kennelapp import Api, kennel_api, settings_for

LIMIT = 4096


def _assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"} and body["code"] == code, body
    return str(body["error"])


def task_with_metadata(levels: int) -> str:
    """A task body whose metadata holds `levels` arrays inside one another (`[[...]]`): the
    body nests two levels more."""
    return '{"input": "x", "metadata": {"deep": ' + "[" * levels + "]" * levels + "}}"


@pytest.fixture
async def small(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    """The app with a 4 KB limit on JSON bodies and text fields."""
    async with kennel_api(settings_for(tmp_path, llm, max_json_bytes=LIMIT)) as api:
        yield api


async def test_a_json_body_over_the_limit_is_413(small: Api) -> None:
    body = {"input": "x" * LIMIT}
    error = _assert_error(
        await small.client.post("/api/tasks", json=body), 413, "payload_too_large"
    )
    assert str(LIMIT) in error
    for path in ("/api/workers", "/api/workers/wrk_x/schedules"):
        response = await small.client.post(path, json={"instructions": "x" * LIMIT})
        _assert_error(response, 413, "payload_too_large")
    assert (await small.client.post("/api/tasks", json={"input": "x" * 3000})).status_code == 200


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(small: Api) -> None:
    """No `Content-Length`: the body is counted as it arrives, and not read to its end."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"input": "'
        for _ in range(1000):  # 1 MB, were it all read
            sent += 1
            yield b"x" * 1024
        yield b'"}'

    response = await small.client.post(
        "/api/tasks", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _assert_error(response, 413, "payload_too_large")
    assert sent <= LIMIT // 1024 + 1


async def test_deep_nesting_is_400(api: Api) -> None:
    for levels in (5000, MAX_DEPTH - 1):
        body = task_with_metadata(levels)
        response = await api.client.post(
            "/api/tasks", content=body, headers={"Content-Type": "application/json"}
        )
        assert "deeper than 64 levels" in _assert_error(response, 400, "invalid_request")
    fits = json.loads(task_with_metadata(MAX_DEPTH - 2))
    assert (await api.client.post("/api/tasks", json=fits)).status_code == 200


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        (b'{"input": "x", "metadata": {"n": NaN}}', "malformed_json", "NaN"),
        (b'{"input": "x", "metadata": {"n": -Infinity}}', "malformed_json", "Infinity"),
        (b'{"input": "x", "metadata": {"n": 1e400}}', "invalid_request", "Infinity"),
        (b'{"input": "a\\u0000b"}', "invalid_request", "NUL"),
        (b'{"input": "x", "metadata": {"k\\u0000": 1}}', "invalid_request", "NUL"),
        (b'{"input": "x", "metadata": {"s": "\\ud800"}}', "invalid_request", "surrogate"),
    ],
)
async def test_json_that_cannot_be_stored_is_refused(
    api: Api, raw: bytes, code: str, fragment: str
) -> None:
    """NaN is not JSON; PostgreSQL refuses NUL; a lone surrogate is not UTF-8."""
    response = await api.client.post(
        "/api/tasks", content=raw, headers={"Content-Type": "application/json"}
    )
    assert fragment in _assert_error(response, 400, code)
    assert (await api.client.get("/api/tasks")).json()["totalCount"] == 0


async def test_a_nul_in_a_worker_or_schedule_field_is_400(api: Api) -> None:
    response = await api.client.post("/api/workers", json={"title": "Rex\x00"})
    _assert_error(response, 400, "invalid_request")
    worker = (await api.client.post("/api/workers", json={})).json()
    response = await api.client.post(
        f"/api/workers/{worker['id']}/schedules",
        json={"input": "a\x00", "when": {"type": "delayed", "delayInSeconds": 60}},
    )
    _assert_error(response, 400, "invalid_request")


async def test_a_urlencoded_form_is_told_to_send_json(api: Api) -> None:
    response = await api.client.post("/api/tasks", data={"input": "hi"})
    assert "urlencoded form" in _assert_error(response, 400, "malformed_json")


async def test_a_text_field_of_a_form_over_the_limit_is_413(small: Api) -> None:
    response = await small.client.post(
        "/api/tasks", data={"input": "x" * (LIMIT + 1)}, files={"files": ("a.txt", b"a")}
    )
    assert "text field" in _assert_error(response, 413, "payload_too_large")
    response = await small.client.post(
        "/api/tasks", data={"input": "x" * 3000}, files={"files": ("a.txt", b"a" * 2 * LIMIT)}
    )
    assert response.status_code == 200, response.text  # files have limits of their own


async def test_bad_forms_are_400(api: Api) -> None:
    response = await api.client.post(
        "/api/tasks",
        content=b"--x\r\nnonsense",
        headers={"Content-Type": "multipart/form-data"},
    )
    _assert_error(response, 400, "malformed_form")
    response = await api.client.post(
        "/api/tasks", data={"input": "a\x00b"}, files={"files": ("a.txt", b"a")}
    )
    assert "NUL" in _assert_error(response, 400, "invalid_request")
