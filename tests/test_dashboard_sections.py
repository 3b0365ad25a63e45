"""The worker page's sections, in process: workspace files, schedules, the webhook and its
delivery log, and the e-mail allow-list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from dashboard import signed_in
from fakellm import FakeLLM
from kennelapp import Api, kennel_api, new_worker, settings_for
from receiver import Receiver, serving_receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as running:
        yield running


@pytest.fixture
async def api(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    settings = settings_for(
        tmp_path,
        llm,
        webhook_allow_http=True,
        allow_private_networks="127.0.0.1/32",
        email_domain="mail.test",
    )
    async with kennel_api(settings) as running:
        yield running


async def test_upload_download_and_delete_workspace_files(api: Api) -> None:
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    page_html = b"<html><script>alert(document.cookie)</script></html>"
    uploaded = await tab.client.post(
        f"/worker/{worker_id}/files",
        data={"csrf_token": tab.csrf},
        files=[("files", ("notes/page.html", page_html, "text/html"))],
        headers={"origin": "http://kennel.test"},
    )
    assert uploaded.status_code == 303, uploaded.text
    page = await tab.get(f"/worker/{worker_id}")
    assert "notes/page.html" in page.text
    download = await tab.get(f"/worker/{worker_id}/files/notes/page.html")
    assert download.content == page_html
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-security-policy"] == "sandbox"
    # The API's link works with the session too, and the same way.
    api_link = await tab.get(f"/api/workers/{worker_id}/files/notes/page.html")
    assert api_link.content == page_html
    assert api_link.headers["content-disposition"].startswith("attachment")
    deleted = await tab.post(f"/worker/{worker_id}/files/delete", {"path": "notes/page.html"})
    assert deleted.status_code == 303
    assert (await tab.get(f"/worker/{worker_id}/files/notes/page.html")).status_code == 404
    assert list(api.kennel.settings.workspaces_dir.glob("**/page.html")) == []


async def test_a_signed_out_browser_following_a_file_link_is_asked_to_sign_in(api: Api) -> None:
    worker_id = await new_worker(api.client)
    transport = api.client._transport
    async with httpx.AsyncClient(transport=transport, base_url="http://kennel.test") as anon:
        link = f"/api/workers/{worker_id}/files/a.txt"
        sent = await anon.get(link, headers={"accept": "text/html"})
        assert sent.status_code == 303 and sent.headers["location"] == f"/signin?next={link}"
        assert (await anon.get(link)).status_code == 401


async def test_schedules_of_each_kind_run_now_and_their_history(api: Api) -> None:
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    forms = [
        {"kind": "cron", "cron": "0 9 * * 1-5", "timezone": "Europe/Madrid"},
        {"kind": "interval", "seconds": "3600"},
        {"kind": "delayed", "seconds": "600"},
        {"kind": "scheduled", "date": "2099-01-02T03:04", "timezone": "Asia/Tokyo"},
    ]
    for form in forms:
        made = await tab.post(f"/worker/{worker_id}/schedules", {"input": "news", **form})
        assert made.status_code == 303, made.text
    listed = (await api.client.get(f"/api/workers/{worker_id}/schedules")).json()["schedules"]
    assert sorted(s["type"] for s in listed) == ["cron", "delayed", "interval", "scheduled"]
    assert {s.get("timezone") for s in listed} == {"Europe/Madrid", "Asia/Tokyo", None}
    page = await tab.get(f"/worker/{worker_id}")
    assert "Europe/Madrid" in page.text and "0 9 * * 1-5" in page.text
    refused = await tab.post(f"/worker/{worker_id}/schedules", {"input": "x", "kind": "cron"})
    assert refused.status_code == 400

    cron = next(s for s in listed if s["type"] == "cron")
    ran = await tab.post(f"/worker/{worker_id}/schedules/{cron['id']}/run")
    assert ran.status_code == 303 and "/task/" in ran.headers["location"]
    history = await tab.get(f"/worker/{worker_id}/schedules/{cron['id']}")
    assert "run now" in history.text and ran.headers["location"] in history.text
    deleted = await tab.post(f"/worker/{worker_id}/schedules/{cron['id']}/delete")
    assert deleted.status_code == 303
    left = (await api.client.get(f"/api/workers/{worker_id}/schedules")).json()["schedules"]
    assert cron["id"] not in {s["id"] for s in left}


async def test_the_webhook_token_is_shown_once_and_the_log_lists_deliveries(
    api: Api, receiver: Receiver
) -> None:
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    url = receiver.endpoint(500, then=[200])
    made = await tab.post(f"/worker/{worker_id}/webhook", {"url": url})
    token = (await api.client.get(f"/api/workers/{worker_id}/webhook")).json()["token"]
    assert made.status_code == 200 and token in made.text
    assert made.headers["cache-control"] == "no-store"
    page = await tab.get(f"/worker/{worker_id}")
    assert token not in page.text and token[:8] in page.text

    regenerated = await tab.post(f"/worker/{worker_id}/webhook/token")
    new_token = (await api.client.get(f"/api/workers/{worker_id}/webhook")).json()["token"]
    assert new_token != token and new_token in regenerated.text

    await api.client.post("/api/tasks", json={"input": "ping", "workerId": worker_id})
    for _ in range(200):
        log = (await tab.get(f"/worker/{worker_id}")).text
        if "status-error" in log:
            break
        await asyncio.sleep(0.05)
    assert "status-error" in log and ">500<" in log
    assert (await tab.post(f"/worker/{worker_id}/webhook", {"url": "ftp://x"})).status_code == 400
    assert (await tab.post(f"/worker/{worker_id}/webhook/delete")).status_code == 303
    assert (await api.client.get(f"/api/workers/{worker_id}/webhook")).json()["url"] is None


async def test_the_email_address_and_allow_list(api: Api) -> None:
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    page = await tab.get(f"/worker/{worker_id}")
    assert f"{worker_id}@mail.test" in page.text
    saved = await tab.post(
        f"/worker/{worker_id}/email", {"allow_list": "Boss@Example.com\n\n@partner.test\n"}
    )
    assert saved.status_code == 303
    template = (await api.client.get("/api/workers")).json()["data"][0]
    assert template["emailAllowList"] == ["boss@example.com", "@partner.test"]
    refused = await tab.post(f"/worker/{worker_id}/email", {"allow_list": "not an address"})
    assert refused.status_code == 400 and "neither an address" in refused.text
