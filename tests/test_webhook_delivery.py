"""Webhook delivery (issue 4, spec §16.5): a real receiver on 127.0.0.1, a fake clock for the
retry schedule. The delivery loop makes the first attempt on its own; retries are driven by
moving the clock and calling the runner's `work_due()`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeClock
from fakellm import FakeLLM, Sleep, Text
from kennel import netpolicy
from kennel.config import Settings
from kennel.services.deliveries import retry_delay, signature_headers
from kennelapp import Api, kennel_api, new_worker, settings_for
from receiver import Delivery, Receiver, serving_receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as found:
        yield found


def _settings(tmp_path: Path, llm: FakeLLM, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_allow_http": True,
        "allow_private_networks": "127.0.0.1/32",
        "webhook_retry_seconds": 10,
        **overrides,
    }
    return settings_for(tmp_path, llm, **values)


@pytest.fixture
async def hooked(
    tmp_path: Path, llm: FakeLLM, clock: FakeClock, database_url: str
) -> AsyncIterator[Api]:
    async with kennel_api(_settings(tmp_path, llm, database_url=database_url), clock) as api:
        yield api


async def _hook(api: Api, worker_id: str, url: str) -> str:
    response = await api.client.put(f"/api/workers/{worker_id}/webhook", json={"url": url})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def _run(api: Api, worker_id: str, text: str) -> Any:
    response = await api.client.post("/api/tasks", json={"input": text, "workerId": worker_id})
    assert response.status_code == 200, response.text
    return response.json()


async def _executions(api: Api, worker_id: str, count: int) -> list[Any]:
    """The execution log, once it holds `count` attempts."""
    async with asyncio.timeout(10):
        while True:
            response = await api.client.get(f"/api/workers/{worker_id}/webhook/executions")
            logs: list[Any] = response.json()["logs"]
            if len(logs) >= count:
                return logs
            await asyncio.sleep(0.02)


async def _waiting(api: Api) -> int:
    """Deliveries queued for another attempt (or in the middle of one)."""
    return await api.kennel.store.jobs.waiting(["webhook"])


async def _arrived(receiver: Receiver, url: str, count: int) -> list[Delivery]:
    await asyncio.to_thread(receiver.wait_for, url, 10, count)
    return receiver.to(url)


def _verifies(delivery: Delivery, token: str) -> bool:
    headers = delivery.headers
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + delivery.body
    digest = hmac.new(token.encode(), signed, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    return expected in headers["webhook-signature"].split()


async def test_a_receiver_down_for_a_while_gets_the_event_when_it_recovers(
    hooked: Api, receiver: Receiver, clock: FakeClock
) -> None:
    worker_id = await new_worker(hooked.client)
    url = receiver.endpoint(503, then=[500, 502, 200])
    token = await _hook(hooked, worker_id, url)
    worker = await _run(hooked, worker_id, "retry me")
    await _executions(hooked, worker_id, 1)  # the first attempt, made at once

    assert await hooked.kennel.runner.work_due("webhook") == 0  # not due yet: backing off
    for attempt in (1, 2, 3):
        clock.advance(10 * 4 ** (attempt - 1) * 1.2)  # the longest wait, jitter included
        assert await hooked.kennel.runner.work_due("webhook") == 1
    clock.advance(10**6)
    assert await hooked.kennel.runner.work_due("webhook") == 0  # delivered: nothing left

    deliveries = await _arrived(receiver, url, 4)
    assert len(deliveries) == 4
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    assert len({d.body for d in deliveries}) == 1  # every retry sends the same message
    assert all(d.headers["x-handinger-token"] == token for d in deliveries)
    assert all(_verifies(d, token) for d in deliveries)
    event = json.loads(deliveries[0].body)
    assert event["type"] == "task.completed"
    assert event["data"]["task"]["id"] == worker["metadata"]["taskId"]
    assert event["data"]["worker"]["output_text"] == "echo: retry me"

    logs = await _executions(hooked, worker_id, 4)
    assert [(log["requestStatus"], log["responseStatus"]) for log in logs] == [
        ("success", 200),
        ("error", 502),
        ("error", 500),
        ("error", 503),
    ]
    assert logs[1]["errorMessage"] == "the endpoint answered HTTP 502"
    assert all(log["taskId"] == worker["metadata"]["taskId"] for log in logs)


async def test_an_event_is_given_up_after_the_last_attempt(
    tmp_path: Path, llm: FakeLLM, clock: FakeClock, receiver: Receiver
) -> None:
    settings = _settings(tmp_path, llm, webhook_max_attempts=3)
    async with kennel_api(settings, clock) as api:
        worker_id = await new_worker(api.client)
        url = receiver.endpoint(500)
        await _hook(api, worker_id, url)
        await _run(api, worker_id, "never arrives")
        await _executions(api, worker_id, 1)
        for _ in range(2):
            clock.advance(3600)
            assert await api.kennel.runner.work_due("webhook") == 1
        clock.advance(10**7)
        assert await api.kennel.runner.work_due("webhook") == 0
        assert await _waiting(api) == 0
        assert len(await _executions(api, worker_id, 3)) == 3
        assert len(receiver.to(url)) == 3


async def test_a_regenerated_token_is_used_from_the_next_delivery_on(
    hooked: Api, receiver: Receiver
) -> None:
    worker_id = await new_worker(hooked.client)
    url = receiver.endpoint()
    old = await _hook(hooked, worker_id, url)
    await _run(hooked, worker_id, "first")
    [first] = await _arrived(receiver, url, 1)

    response = await hooked.client.post(f"/api/workers/{worker_id}/webhook/regenerate-token")
    new = response.json()["token"]
    assert new != old
    await _run(hooked, worker_id, "second")
    second = (await _arrived(receiver, url, 2))[1]

    assert first.headers["x-handinger-token"] == old and _verifies(first, old)
    assert second.headers["x-handinger-token"] == new and _verifies(second, new)
    assert not _verifies(second, old)


async def test_a_failed_task_is_delivered_as_task_failed(
    hooked: Api, receiver: Receiver, llm: FakeLLM
) -> None:
    llm.fail("doomed", 400, "bad request")
    worker_id = await new_worker(hooked.client)
    url = receiver.endpoint()
    await _hook(hooked, worker_id, url)
    worker = await _run(hooked, worker_id, "doomed")
    assert "error" in worker["metadata"]
    [delivery] = await _arrived(receiver, url, 1)
    event = json.loads(delivery.body)
    assert event["type"] == "task.failed"
    assert event["data"]["task"]["status"] == "error"


async def test_unreachable_and_slow_endpoints_are_logged_and_retried(
    tmp_path: Path, llm: FakeLLM, clock: FakeClock, receiver: Receiver
) -> None:
    async with kennel_api(_settings(tmp_path, llm, webhook_timeout_seconds=0.3), clock) as api:
        closed = await new_worker(api.client)
        await _hook(api, closed, "http://127.0.0.1:9/nobody-listens")
        slow = await new_worker(api.client)
        await _hook(api, slow, receiver.endpoint(200, delay=2))
        await _run(api, closed, "to a closed port")
        await _run(api, slow, "to a slow endpoint")

        [refused] = await _executions(api, closed, 1)
        assert (refused["requestStatus"], refused["responseStatus"]) == ("error", None)
        assert refused["errorMessage"].startswith("could not connect")
        [timed_out] = await _executions(api, slow, 1)
        assert timed_out["errorMessage"] == "timed out after 0.3 s"
        assert timed_out["durationMs"] < 2000
        assert await _waiting(api) == 2  # both retried later


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery(
    tmp_path: Path,
    llm: FakeLLM,
    clock: FakeClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_resolve = netpolicy._resolve

    async def resolve(host: str, port: int) -> list[Any]:
        if host == "hooks.example.test":  # a public-looking name whose DNS points inside
            return [ipaddress.ip_address("127.0.0.1")]
        return await real_resolve(host, port)

    monkeypatch.setattr(netpolicy, "_resolve", resolve)
    settings = _settings(tmp_path, llm, allow_private_networks="")
    async with kennel_api(settings, clock) as api:
        worker_id = await new_worker(api.client)
        url = receiver.endpoint().replace("127.0.0.1", "hooks.example.test")
        await _hook(api, worker_id, url)  # no DNS lookup when it is set
        await _run(api, worker_id, "to an internal address")
        [log] = await _executions(api, worker_id, 1)
        assert log["errorMessage"].startswith("refused by the network policy, not retried: ")
        assert "hooks.example.test points at" in log["errorMessage"]
        assert "127.0.0.1" in log["errorMessage"]
        assert "KENNEL_ALLOW_PRIVATE_NETWORKS" in log["errorMessage"]
        assert receiver.to(url.replace("hooks.example.test", "127.0.0.1")) == []

        # A refusal is final: no retry is waiting, however long one waits.
        assert await _waiting(api) == 0
        clock.advance(10**7)
        assert await api.kennel.runner.work_due("webhook") == 0
        assert len(await _executions(api, worker_id, 1)) == 1
        [warning] = [r for r in caplog.records if r.name == "kennel.services.deliveries"]
        assert warning.levelname == "WARNING"
        assert log["errorMessage"] in warning.getMessage()


async def test_no_webhook_no_delivery_and_a_removed_webhook_drops_the_event(
    hooked: Api, receiver: Receiver, clock: FakeClock
) -> None:
    worker_id = await new_worker(hooked.client)
    await _run(hooked, worker_id, "nobody listens")
    assert await _waiting(hooked) == 0

    url = receiver.endpoint(500)
    await _hook(hooked, worker_id, url)
    await _run(hooked, worker_id, "then the hook goes away")
    await _executions(hooked, worker_id, 1)
    assert (await hooked.client.delete(f"/api/workers/{worker_id}/webhook")).status_code == 200
    clock.advance(3600)
    assert await hooked.kennel.runner.work_due("webhook") == 0
    assert await _waiting(hooked) == 0
    assert len(receiver.to(url)) == 1


def test_signatures_follow_standard_webhooks() -> None:
    from datetime import UTC, datetime

    headers = signature_headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        datetime.fromtimestamp(1614265330, UTC),
        '{"test": 2432232314}',
        "whk_secret",
    )
    digest = hmac.new(
        b"whk_secret",
        b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}',
        hashlib.sha256,
    ).digest()
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def test_retries_back_off_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    defaults = Settings()
    delays = [retry_delay(attempt, defaults, rng) for attempt in range(1, 8)]
    bases = [15, 60, 240, 960, 3840, 15360, 61440]
    assert all(0.8 * b <= d <= 1.2 * b for d, b in zip(delays, bases, strict=True))
    assert len({round(d / b, 6) for d, b in zip(delays, bases, strict=True)}) > 1  # jittered
    hours = sum(bases) / 3600
    assert 20 < hours < 24  # the default 8 attempts span about a day

    capped = Settings(webhook_retry_seconds=15, webhook_retry_max_seconds=100)
    assert retry_delay(7, capped, rng) <= 120


async def test_the_documented_verification_snippet_accepts_a_real_delivery(
    hooked: Api, receiver: Receiver
) -> None:
    security = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    snippet = security.split("```python\nimport base64, hashlib, hmac, time\n", 1)[1]
    namespace: dict[str, Any] = {}
    exec("import base64, hashlib, hmac, time\n" + snippet.split("```", 1)[0], namespace)
    verify = namespace["verify"]

    worker_id = await new_worker(hooked.client)
    url = receiver.endpoint()
    token = await _hook(hooked, worker_id, url)
    await _run(hooked, worker_id, "verify me")
    [delivery] = await _arrived(receiver, url, 1)
    forever = 10**10  # the fake clock signs in May 2026
    assert verify(token, delivery.headers, delivery.body, tolerance=forever)
    assert not verify(token, delivery.headers, delivery.body + b" ", tolerance=forever)
    assert not verify("whk_other", delivery.headers, delivery.body, tolerance=forever)
    assert not verify(token, delivery.headers, delivery.body)  # too old for the default


async def test_a_cancelled_task_is_delivered_as_task_aborted(
    hooked: Api, receiver: Receiver, llm: FakeLLM
) -> None:
    llm.script("hang on", Sleep(60, Text("never said")))
    worker_id = await new_worker(hooked.client)
    url = receiver.endpoint()
    await _hook(hooked, worker_id, url)
    body = {"input": "hang on", "workerId": worker_id, "taskId": "t-hook-cancel"}
    blocked = asyncio.create_task(hooked.client.post("/api/tasks", json=body))
    async with asyncio.timeout(10):
        while not llm.requests:
            await asyncio.sleep(0.02)
    assert (await hooked.client.post("/api/tasks/t-hook-cancel/cancel")).status_code == 200
    await blocked

    [delivery] = await _arrived(receiver, url, 1)
    event = json.loads(delivery.body)
    assert event["type"] == "task.aborted"
    assert event["data"]["task"]["status"] == "aborted"
    assert event["data"]["worker"]["metadata"]["incompleteReason"] == "cancelled"
