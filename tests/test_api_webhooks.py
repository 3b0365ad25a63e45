"""Webhook configuration routes over HTTP against the real app (spec §3.9, §16.14)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from handinger import AsyncHandinger

from kennel import ids
from kennel.models.webhooks import DeliveryStatus, WebhookExecution
from kennelapp import Api, kennel_api, new_worker, settings_for

EMPTY_JSON = {"Content-Type": "application/json"}
"""What the SDK sends on DELETE and regenerate-token: this content type and no body."""


@pytest.fixture
async def permissive(tmp_path: Path) -> AsyncIterator[Api]:
    """Settings as a test receiver on this machine needs: plain http to loopback allowed."""
    settings = settings_for(
        tmp_path, None, webhook_allow_http=True, allow_private_networks="127.0.0.0/8"
    )
    async with kennel_api(settings) as running_api:
        yield running_api


def hook(worker_id: str) -> str:
    return f"/api/workers/{worker_id}/webhook"


async def _put(client: httpx.AsyncClient, worker_id: str, url: str | None) -> httpx.Response:
    return await client.put(hook(worker_id), json={"url": url})


async def test_token_is_made_once_kept_on_change_and_cleared_with_null(api: Api) -> None:
    worker_id = await new_worker(api.client)
    assert (await api.client.get(hook(worker_id))).json() == {"token": None, "url": None}

    first = (await _put(api.client, worker_id, "https://hooks.example.com/a")).json()
    assert first["url"] == "https://hooks.example.com/a"
    assert first["token"].startswith("whk_") and len(first["token"]) >= 4 + 26
    assert (await api.client.get(hook(worker_id))).json() == first

    moved = (await _put(api.client, worker_id, "https://hooks.example.com/b")).json()
    assert moved == {"token": first["token"], "url": "https://hooks.example.com/b"}

    cleared = await _put(api.client, worker_id, None)
    assert cleared.status_code == 200
    assert cleared.json() == {"token": None, "url": None}
    assert (await api.client.get(hook(worker_id))).json() == {"token": None, "url": None}

    again = (await _put(api.client, worker_id, "https://hooks.example.com/a")).json()
    assert again["token"].startswith("whk_") and again["token"] != first["token"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{}", "url: Field required"),
        (b"", "url: Field required"),
        (b'{"address": "https://hooks.example.com/"}', "url: Field required"),
        (b'{"url": 5}', "url: Input should be a valid string"),
        (b'{"url": ""}', "https://"),
        (b"[]", "JSON object"),
        (b"{nope", "not valid JSON"),
    ],
)
async def test_put_needs_the_url_key(api: Api, body: bytes, reason: str) -> None:
    worker_id = await new_worker(api.client)
    await _put(api.client, worker_id, "https://hooks.example.com/a")
    response = await api.client.put(hook(worker_id), content=body, headers=EMPTY_JSON)
    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"error", "code"} and reason in error["error"]
    unchanged = (await api.client.get(hook(worker_id))).json()
    assert unchanged["url"] == "https://hooks.example.com/a"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/a", "https://"),
        ("ftp://hooks.example.com/a", "https://"),
        ("hooks.example.com/a", "https://"),
        ("https://", "host"),
        ("https://hooks.example.com:70000/", "port"),
        ("https://hooks.example.com/" + "a" * 2023, "longer than 2048"),
        ("https://127.0.0.1/a", "private, loopback or reserved"),
        ("https://10.0.0.7/a", "private, loopback or reserved"),
        ("https://169.254.169.254/latest/meta-data", "private, loopback or reserved"),
        ("https://[::1]:8443/a", "private, loopback or reserved"),
        ("https://localhost/a", "private, loopback or reserved"),
        ("https://0.0.0.0/a", "private, loopback or reserved"),
    ],
)
async def test_urls_kennel_refuses(api: Api, url: str, reason: str) -> None:
    worker_id = await new_worker(api.client)
    response = await _put(api.client, worker_id, url)
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    assert response.json()["code"] == "invalid_webhook_url"
    assert (await api.client.get(hook(worker_id))).json() == {"token": None, "url": None}


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("http://hooks.example.com/a", "accepted with KENNEL_WEBHOOK_ALLOW_HTTP=true"),
        ("https://127.0.0.1:8443/a", "add 127.0.0.1/32 (or its network) to "),
        ("https://10.0.0.7/a", "KENNEL_ALLOW_PRIVATE_NETWORKS"),
        ("https://[::1]/a", "add ::1/128 (or its network) to KENNEL_ALLOW_PRIVATE_NETWORKS"),
    ],
)
async def test_a_refused_url_names_the_setting_that_allows_it(api: Api, url: str, fix: str) -> None:
    worker_id = await new_worker(api.client)
    response = await _put(api.client, worker_id, url)
    assert response.status_code == 400
    assert fix in response.json()["error"]


async def test_only_http_urls_are_told_about_the_http_setting(api: Api) -> None:
    worker_id = await new_worker(api.client)
    response = await _put(api.client, worker_id, "ftp://hooks.example.com/a")
    assert "KENNEL_WEBHOOK_ALLOW_HTTP" not in response.json()["error"]


async def test_the_longest_url_passes(api: Api) -> None:
    worker_id = await new_worker(api.client)
    url = "https://hooks.example.com/" + "a" * (2048 - len("https://hooks.example.com/"))
    response = await _put(api.client, worker_id, url)
    assert response.status_code == 200 and response.json()["url"] == url


async def test_settings_open_http_and_allow_listed_networks(permissive: Api) -> None:
    worker_id = await new_worker(permissive.client)
    for url in ("http://127.0.0.1:8123/hook", "http://localhost:8123/hook"):
        response = await _put(permissive.client, worker_id, url)
        assert response.status_code == 200 and response.json()["url"] == url
    refused = await _put(permissive.client, worker_id, "http://10.0.0.7/hook")
    assert refused.status_code == 400


async def test_delete_clears_even_with_an_empty_json_body(api: Api) -> None:
    worker_id = await new_worker(api.client)
    await _put(api.client, worker_id, "https://hooks.example.com/a")
    response = await api.client.delete(hook(worker_id), headers=EMPTY_JSON)
    assert response.status_code == 200
    assert response.json() == {"token": None, "url": None}
    assert (await api.client.get(hook(worker_id))).json() == {"token": None, "url": None}
    again = await api.client.delete(hook(worker_id), headers=EMPTY_JSON)
    assert again.status_code == 200 and again.json() == {"token": None, "url": None}


async def test_regenerate_token(api: Api) -> None:
    worker_id = await new_worker(api.client)
    path = f"{hook(worker_id)}/regenerate-token"
    missing = await api.client.post(path, headers=EMPTY_JSON)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    first = (await _put(api.client, worker_id, "https://hooks.example.com/a")).json()
    response = await api.client.post(path, headers=EMPTY_JSON)
    assert response.status_code == 200
    renewed = response.json()
    assert renewed["url"] == first["url"]
    assert renewed["token"].startswith("whk_") and renewed["token"] != first["token"]
    assert (await api.client.get(hook(worker_id))).json() == renewed

    await api.client.delete(hook(worker_id))
    assert (await api.client.post(path)).status_code == 404


async def _every_route(client: httpx.AsyncClient, worker_id: str) -> list[httpx.Response]:
    return [
        await client.get(hook(worker_id)),
        await _put(client, worker_id, "https://hooks.example.com/evil"),
        await client.delete(hook(worker_id), headers=EMPTY_JSON),
        await client.post(f"{hook(worker_id)}/regenerate-token", headers=EMPTY_JSON),
        await client.get(f"{hook(worker_id)}/executions"),
    ]


async def test_only_the_creator_may_touch_the_webhook(api: Api) -> None:
    worker_id = await new_worker(api.client)
    configured = (await _put(api.client, worker_id, "https://hooks.example.com/a")).json()
    async with api.as_key(await api.new_key("acme", "bob@acme.test")) as bob:
        answers = await _every_route(bob, worker_id)
    assert [r.status_code for r in answers] == [403] * 5
    assert {r.json()["code"] for r in answers} == {"forbidden"}
    assert (await api.client.get(hook(worker_id))).json() == configured


async def test_other_organizations_and_deleted_workers_are_not_found(api: Api) -> None:
    worker_id = await new_worker(api.client)
    await _put(api.client, worker_id, "https://hooks.example.com/a")
    async with api.as_key(await api.new_key("globex", "eve@globex.test")) as eve:
        assert [r.status_code for r in await _every_route(eve, worker_id)] == [404] * 5
    assert (await api.client.delete(f"/api/workers/{worker_id}")).status_code == 200
    assert [r.status_code for r in await _every_route(api.client, worker_id)] == [404] * 5


def _execution(worker_id: str, organization_id: str, number: int) -> WebhookExecution:
    failed = number % 3 == 0
    return WebhookExecution(
        id=ids.new_id("whe"),
        worker_id=worker_id,
        organization_id=organization_id,
        url="https://hooks.example.com/a",
        request_status=DeliveryStatus.ERROR if failed else DeliveryStatus.SUCCESS,
        response_status=None if failed else 200,
        error_message="connection refused" if failed else None,
        duration_ms=number,
        created_at=datetime(2026, 5, 11, 9, tzinfo=UTC) + timedelta(seconds=number),
        task_id=f"tsk_{number}",
        task_title=f"Task {number}",
    )


async def test_executions_are_paged_newest_first(api: Api) -> None:
    created = (await api.client.post("/api/workers", json={"title": "Rex"})).json()
    worker_id, organization_id = created["id"], created["organizationId"]
    other_id = await new_worker(api.client)
    path = f"{hook(worker_id)}/executions"
    assert (await api.client.get(path)).json() == {
        "logs": [],
        "page": 1,
        "pageCount": 1,
        "totalCount": 0,
    }
    store = api.kennel.store.webhooks
    for number in range(120):
        await store.record_execution(_execution(worker_id, organization_id, number))
    await store.record_execution(_execution(other_id, organization_id, 500))

    pages = [(await api.client.get(path, params={"page": page})).json() for page in (1, 2, 3)]
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert {(p["pageCount"], p["totalCount"]) for p in pages} == {(3, 120)}
    assert [len(p["logs"]) for p in pages] == [50, 50, 20]
    durations = [log["durationMs"] for p in pages for log in p["logs"]]
    assert durations == list(range(119, -1, -1))
    assert (await api.client.get(path)).json() == pages[0]
    beyond = (await api.client.get(path, params={"page": 4})).json()
    assert beyond == {"logs": [], "page": 4, "pageCount": 3, "totalCount": 120}

    failed = pages[2]["logs"][-1]
    assert failed == {
        "id": failed["id"],
        "createdAt": "2026-05-11T09:00:00.000Z",
        "durationMs": 0,
        "errorMessage": "connection refused",
        "requestStatus": "error",
        "responseStatus": None,
        "taskId": "tsk_0",
        "taskTitle": "Task 0",
        "url": "https://hooks.example.com/a",
        "workerId": worker_id,
    }
    assert failed["id"].startswith("whe_")
    succeeded = pages[2]["logs"][-2]
    assert (succeeded["requestStatus"], succeeded["responseStatus"]) == ("success", 200)
    assert succeeded["errorMessage"] is None


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5"])
async def test_a_bad_page_is_400(api: Api, page: str) -> None:
    worker_id = await new_worker(api.client)
    response = await api.client.get(f"{hook(worker_id)}/executions", params={"page": page})
    assert response.status_code == 400
    assert set(response.json()) == {"error", "code"}


async def test_the_sdk_reads_every_webhook_answer_strictly(api: Api) -> None:
    worker_id = await new_worker(api.client)
    async with httpx.AsyncClient(transport=api.client._transport) as http:
        sdk = AsyncHandinger(
            api_key=api.key,
            base_url="http://kennel.test",
            http_client=http,
            max_retries=0,
            _strict_response_validation=True,
        )
        webhooks = sdk.workers.webhooks
        assert (await webhooks.retrieve(worker_id)).url is None
        configured = await webhooks.update(worker_id, url="https://hooks.example.com/a")
        assert configured.token is not None and configured.token.startswith("whk_")
        renewed = await webhooks.regenerate_token(worker_id)
        assert renewed.url == configured.url and renewed.token != configured.token
        log = await webhooks.list_executions(worker_id, page=1)
        assert (log.page, log.page_count, log.total_count, log.logs) == (1, 1, 0, [])
        cleared = await webhooks.delete(worker_id)
        assert (cleared.url, cleared.token) == (None, None)
        assert (await webhooks.update(worker_id, url=None)).token is None
