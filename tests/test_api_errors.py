"""Error responses: the right status, `{"error", "code"}`, and nothing stored on refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from fakellm import FakeLLM
from kennel.api.boundary import RequestGuard
from kennelapp import Api, kennel_api, settings_for


def _assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"} and body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    return body


async def test_missing_and_unknown_keys_are_401(api: Api) -> None:
    async with api.as_key("hdg_not-a-key") as stranger:
        _assert_error(await stranger.get("/api/workers"), 401, "unauthorized")
    response = await api.client.get("/api/workers", headers={"Authorization": ""})
    _assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": "x", "budget": "huge"}, "budget"),
        ({"input": 3}, "input"),
        ({"input": "x", "taskId": "a/b"}, "taskId"),
        ({"input": "x", "stream": "maybe"}, "stream"),
    ],
)
async def test_invalid_task_bodies_are_400(api: Api, body: dict, fragment: str) -> None:
    error = _assert_error(await api.client.post("/api/tasks", json=body), 400, "invalid_request")
    assert fragment in error["error"]
    assert (await api.client.get("/api/tasks")).json()["totalCount"] == 0


async def test_malformed_json_is_400(api: Api) -> None:
    response = await api.client.post(
        "/api/tasks", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    _assert_error(response, 400, "malformed_json")
    response = await api.client.post("/api/workers", json=[1, 2])
    _assert_error(response, 400, "invalid_request")


async def test_invalid_worker_fields_are_400(api: Api) -> None:
    for body in (
        {"title": "x" * 201},
        {"summary": "x" * 81},
        {"visibility": "secret"},
        {"outputSchema": {"type": "array"}},
        {"outputSchema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
    ):
        _assert_error(await api.client.post("/api/workers", json=body), 400, "invalid_request")
    worker = (await api.client.post("/api/workers", json={})).json()
    response = await api.client.patch(f"/api/workers/{worker['id']}", json={"title": None})
    _assert_error(response, 400, "invalid_request")


async def test_unknown_routes_and_ids_are_404(api: Api) -> None:
    _assert_error(await api.client.get("/api/nothing"), 404, "not_found")
    _assert_error(await api.client.get("/api/workers/wrk_missing"), 404, "not_found")
    _assert_error(await api.client.get("/api/tasks/tsk_missing"), 404, "not_found")
    response = await api.client.post("/api/tasks", json={"input": "x", "workerId": "wrk_nope"})
    _assert_error(response, 404, "not_found")


async def test_client_errors_tell_sdks_not_to_retry(api: Api) -> None:
    response = await api.client.get("/api/tasks/tsk_missing")
    assert response.headers["x-should-retry"] == "false"


async def test_a_task_id_of_another_worker_is_409(api: Api) -> None:
    one = (await api.client.post("/api/workers", json={})).json()
    two = (await api.client.post("/api/workers", json={})).json()
    await api.client.post("/api/tasks", json={"input": "hi", "workerId": one["id"], "taskId": "t1"})
    response = await api.client.post(
        "/api/tasks", json={"input": "hi", "workerId": two["id"], "taskId": "t1"}
    )
    _assert_error(response, 409, "conflict")


async def test_archived_tasks_take_no_new_turns(api: Api) -> None:
    await api.client.post("/api/tasks", json={"input": "hi", "taskId": "t_arch"})
    assert (await api.client.delete("/api/tasks/t_arch")).json() == {"archived": True}
    response = await api.client.post("/api/tasks", json={"input": "again", "taskId": "t_arch"})
    _assert_error(response, 409, "conflict")
    assert (await api.client.get("/api/tasks/t_arch")).json()["task"]["archived"] is True
    assert (await api.client.get("/api/tasks")).json()["totalCount"] == 0


async def test_an_organization_out_of_credits_gets_402(api: Api) -> None:
    principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
    await api.kennel.store.auth.set_credit_balance(principal.organization_id, 0)
    response = await api.client.post("/api/tasks", json={"input": "hi"})
    _assert_error(response, 402, "credits_exhausted")
    assert response.headers["x-should-retry"] == "false"


async def test_credits_are_spent_from_the_balance(api: Api) -> None:
    principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
    await api.kennel.store.auth.set_credit_balance(principal.organization_id, 100)
    worker = (await api.client.post("/api/tasks", json={"input": "hi"})).json()
    organization = await api.kennel.store.auth.get_organization(principal.organization_id)
    assert worker["usage"]["credits"] >= 1
    assert organization.credit_balance == 100 - worker["usage"]["credits"]


async def test_without_a_model_tasks_fail_with_the_setting_to_set(tmp_path: Path) -> None:
    async with kennel_api(settings_for(tmp_path, None)) as api:
        response = await api.client.post("/api/tasks", json={"input": "hi"})
        error = _assert_error(response, 503, "model_not_configured")
        assert "KENNEL_MODEL" in error["error"]
        assert (await api.client.get("/api/workers")).json()["totalCount"] == 0


async def test_a_worker_with_an_unknown_model_is_refused(api: Api) -> None:
    response = await api.client.post("/api/workers", json={"model": "nonsense:thing"})
    error = _assert_error(response, 400, "invalid_model")
    assert "nonsense:thing" in error["error"]


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path, llm: FakeLLM) -> None:
    settings = settings_for(tmp_path, llm, rate_limit_per_second=1, rate_limit_burst=3)
    async with kennel_api(settings) as api:
        statuses = [(await api.client.get("/api/workers")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        response = await api.client.get("/api/workers")
        _assert_error(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
        assert "x-should-retry" not in response.headers


async def test_an_unexpected_error_is_a_json_500_that_leaks_nothing(
    tmp_path: Path, llm: FakeLLM
) -> None:
    async with kennel_api(settings_for(tmp_path, llm)) as api:
        (tmp_path / "workspaces").write_text("a file where the workspaces folder should be")
        response = await api.client.post(
            "/api/tasks", data={"input": "hi"}, files={"files": ("notes.txt", b"woof")}
        )
        body = _assert_error(response, 500, "internal_error")
        assert body["error"] == "internal server error"
        assert (await api.client.get("/api/workers")).status_code == 200


async def test_a_nul_character_in_the_url_is_400(api: Api) -> None:
    """PostgreSQL refuses NUL in text, so such an id must never reach the database."""
    for url in ("/api/workers/wrk_a%00b", "/api/tasks/t%00", "/api/tasks?workerId=w%00"):
        _assert_error(await api.client.get(url), 400, "invalid_url")
    assert (await api.client.get("/api/tasks?workerId=w%01")).json()["totalCount"] == 0


async def test_a_client_gone_mid_request_gets_no_answer_and_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nobody is left to read a 500, and a client hanging up is not the server's failure."""

    async def reading_app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ClientDisconnect()

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/api/tasks", "query_string": b""}
    await RequestGuard(reading_app)(scope, receive, send)
    assert sent == []
    assert "unhandled" not in caplog.text
