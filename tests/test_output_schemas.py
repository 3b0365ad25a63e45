"""Output schemas resolve their `$ref`s inside themselves only: no URL is fetched for them, when a
worker is created or updated, when the model writes one, or when a task runs."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fakellm import FakeLLM, ToolCall, tool_calls
from kennel.jsonvalues import MAX_DEPTH
from kennelapp import Api, kennel_api, settings_for

REMOTE_PART = {"type": "object", "properties": {"secret": {"type": "string"}}}


class SchemaHost:
    """A loopback HTTP server that would hand out a schema, and counts who asks for one."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.paths.append(self.path)
                body = json.dumps(REMOTE_PART).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/ref.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SchemaHost:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def schema_host() -> Iterator[SchemaHost]:
    with SchemaHost() as host:
        yield host


@pytest.fixture
async def api(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, llm)) as running:
        yield running


def _remote(url: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"found": {"$ref": url}}}


async def test_a_schema_that_needs_a_remote_reference_is_refused(
    api: Api, schema_host: SchemaHost
) -> None:
    response = await api.client.post(
        "/api/workers", json={"outputSchema": _remote(schema_host.url)}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert schema_host.url in response.json()["error"]

    worker = (await api.client.post("/api/workers", json={})).json()
    for schema in (
        _remote(schema_host.url),
        _remote("other.json#/definitions/a"),
        _remote("#/definitions/missing"),
        {"type": "object", "definitions": {"unused": {"$ref": schema_host.url}}},
        {"$id": "http://127.0.0.1/base/", "type": "object", "properties": {"a": {"$ref": "x"}}},
    ):
        response = await api.client.patch(
            f"/api/workers/{worker['id']}", json={"outputSchema": schema}
        )
        assert response.status_code == 400, (schema, response.text)
        assert "$ref" in response.json()["error"]
    assert schema_host.paths == []


async def test_references_inside_the_schema_resolve(api: Api, llm: FakeLLM) -> None:
    schema = {
        "$id": "https://schemas.example/invoice.json",
        "type": "object",
        "definitions": {
            "money": {"type": "number", "minimum": 0},
            "party": {
                "$id": "party.json",
                "type": "object",
                "required": ["name"],
                "properties": {"boss": {"$ref": "#"}},  # party.json itself: recursion
            },
        },
        "properties": {
            "total": {"$ref": "#/definitions/money"},
            "vendor": {"$ref": "party.json"},
            "buyer": {"$ref": "https://schemas.example/party.json"},
            "meta": {"$ref": "http://json-schema.org/draft-07/schema#"},
        },
        "required": ["total", "vendor"],
    }
    created = await api.client.post("/api/workers", json={"outputSchema": schema})
    assert created.status_code == 200, created.text
    llm.script(
        "Read the invoice",
        tool_calls(ToolCall("final_result", {"total": -3, "vendor": {"name": "ACME"}})),
        tool_calls(ToolCall("final_result", {"total": 3, "vendor": {"name": "A", "boss": {}}})),
        tool_calls(ToolCall("final_result", {"total": 3, "vendor": {"name": "ACME"}})),
    )
    response = await api.client.post(
        "/api/tasks", json={"input": "Read the invoice", "workerId": created.json()["id"]}
    )
    assert response.json()["structured_output"] == {"total": 3, "vendor": {"name": "ACME"}}
    retries = json.dumps(llm.requests[-1]["messages"])
    assert "minimum" in retries  # #/definitions/money was followed
    assert "vendor/boss: 'name' is a required property" in retries  # and party.json's "#"


async def test_a_stored_schema_with_a_remote_reference_fails_its_turns_unfetched(
    api: Api, schema_host: SchemaHost, llm: FakeLLM
) -> None:
    """A schema stored before references were checked is refused when a task runs."""
    worker = (await api.client.post("/api/workers", json={})).json()
    principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
    await api.kennel.store.workers.update(
        principal.organization_id,
        worker["id"],
        {"output_schema": _remote(schema_host.url)},
        api.kennel.services.workers._clock.now(),
    )
    llm.script("Find it", tool_calls(ToolCall("final_result", {"found": {"secret": "x"}})))
    response = await api.client.post(
        "/api/tasks", json={"input": "Find it", "workerId": worker["id"]}
    )
    error = response.json()["metadata"]["error"]
    assert error["code"] == "invalid_output_schema"
    assert schema_host.url in error["message"]
    assert schema_host.paths == []


async def test_a_schema_the_model_writes_is_held_to_the_same_rule(
    api: Api, schema_host: SchemaHost, llm: FakeLLM
) -> None:
    design = {
        "instructions": "You find things.",
        "summary": "Finds things",
        "output_schema": _remote(schema_host.url),
    }
    llm.script("Find things", tool_calls(ToolCall("final_result", design)))
    response = await api.client.post("/api/workers", json={"prompt": "Find things for me."})
    assert response.status_code == 200, response.text
    assert response.json()["outputSchema"] is None
    assert schema_host.paths == []


def _nested(levels: int) -> dict[str, Any]:
    """An object schema whose JSON nests `levels` deep."""
    schema: dict[str, Any] = {"type": "object"}
    depth = 1
    while depth + 2 <= levels:
        schema = {"type": "object", "properties": {"a": schema}}
        depth += 2
    return schema


async def test_deep_schemas_are_refused_before_they_overflow(api: Api) -> None:
    deepest = _nested(MAX_DEPTH - 1)  # inside a body one level deeper: the most it may hold
    response = await api.client.post("/api/workers", json={"outputSchema": deepest})
    assert response.status_code == 200, response.text
    response = await api.client.post("/api/workers", json={"outputSchema": _nested(MAX_DEPTH + 1)})
    assert response.status_code == 400, response.text
    assert "deeper" in response.json()["error"]
