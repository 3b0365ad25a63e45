"""The OpenAPI document tells the truth: schemathesis builds requests from it (valid ones and
broken ones, for made-up ids and for real objects) against a real `kennel serve` and fails on any
5xx and on any answer the document does not describe. Bounded and repeatable: a few examples per
operation, derandomized, and no example database carried from one run to the next."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fakellm import FakeLLM
from kennelapp import kennel_api, settings_for
from server import KennelServer

EXAMPLES = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM) -> Iterator[KennelServer]:
    kennel = KennelServer(tmp_path_factory.mktemp("openapi"), llm, KENNEL_WEBHOOK_ALLOW_HTTP="1")
    try:
        yield kennel.start()
    finally:
        kennel.stop()


def test_the_api_answers_as_its_document_says(server: KennelServer) -> None:
    headers = {"Authorization": f"Bearer {server.create_key()}"}
    schema = schemathesis.openapi.from_url(f"{server.base_url}/api/openapi.json")
    failures = []
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
        for found in schema.get_all_operations():
            operation = found.ok()
            names = {parameter.name for parameter in operation.path_parameters}
            runs = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
            if names:  # and again on objects that exist, made anew: the last run may delete them
                real = {name: value for name, value in _objects(client).items() if name in names}
                runs.append((GenerationMode.POSITIVE, real))
            for mode, ids in runs:
                try:
                    _exercise(operation.as_strategy(mode, path_parameters=ids), server, headers)
                except (Exception, FailureGroup) as failure:  # all operations' failures, together
                    failures.append(f"{operation.label} ({mode.value}, ids {ids}):\n{failure}")
    assert not failures, "\n\n".join(failures)


def _objects(client: httpx.Client) -> dict[str, str]:
    """A new worker with a task, a file, a schedule and a webhook: their path parameters."""
    upload = {"files": ("notes.txt", b"woof")}
    worker = client.post("/api/tasks", data={"input": "hello"}, files=upload).json()
    worker_id = worker["id"]
    when = {"type": "delayed", "delayInSeconds": 3600}
    schedule = client.post(f"/api/workers/{worker_id}/schedules", json={"input": "x", "when": when})
    client.put(f"/api/workers/{worker_id}/webhook", json={"url": "http://127.0.0.1:9/hook"})
    return {
        "worker_id": worker_id,
        "task_id": worker["metadata"]["taskId"],
        "schedule_id": schedule.json()["id"],
        "path": "notes.txt",
    }


def _exercise(strategy: Any, server: KennelServer, headers: dict[str, str]) -> None:
    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(base_url=server.base_url, headers=headers, checks=CHECKS, timeout=60)

    run()


BODIES = {
    ("post", "/api/workers"): ("CreateWorkerBody", False),
    ("patch", "/api/workers/{worker_id}"): ("UpdateWorkerBody", False),
    ("post", "/api/tasks"): ("CreateTaskBody", True),
    ("post", "/api/workers/{worker_id}/schedules"): ("CreateScheduleBody", True),
    ("put", "/api/workers/{worker_id}/webhook"): ("UpdateWebhookBody", True),
}


async def test_the_document_describes_every_body_and_the_real_errors(tmp_path: Path) -> None:
    async with kennel_api(settings_for(tmp_path, None)) as api:
        document = (await api.client.get("/api/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                if status != "200":
                    error = response["content"]["application/json"]["schema"]
                    assert error == {"$ref": "#/components/schemas/Error"}, (method, path)
            body = operation.get("requestBody")
            if (method, path) not in BODIES:
                assert body is None, (method, path)
                continue
            name, required = BODIES[(method, path)]
            assert body["required"] is required
            assert body["content"]["application/json"]["schema"]["$ref"].endswith(f"/{name}")
            assert schemas[name]["type"] == "object"
    form = document["paths"]["/api/tasks"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["files"]["items"]["format"] == "binary"
    assert set(schemas["Error"]["required"]) == {"error", "code"}
    assert "HTTPValidationError" not in schemas
