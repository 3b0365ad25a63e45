"""The dashboard's sign-in, its form checks (CSRF, Origin) and the workers page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dashboard import browser, signed_in
from kennelapp import Api, kennel_api, new_worker, settings_for


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, None), with_runner=False) as running:
        yield running


async def test_a_signed_out_visit_shows_the_sign_in_form_and_then_the_page(api: Api) -> None:
    worker_id = await new_worker(api.client, title="Fetcher")
    tab = browser(api)
    page = await tab.get(f"/worker/{worker_id}/edit?x=1")
    assert page.status_code == 401
    assert 'name="key"' in page.text and f'value="/worker/{worker_id}/edit?x=1"' in page.text
    assert "Fetcher" not in page.text
    response = await tab.sign_in(api.key, f"/worker/{worker_id}/edit?x=1")
    assert response.headers["location"] == f"/worker/{worker_id}/edit?x=1"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert api.key not in response.headers["set-cookie"]
    assert "Fetcher" in (await tab.get(f"/worker/{worker_id}/edit")).text


async def test_a_wrong_key_or_a_foreign_next_does_not_sign_in(api: Api) -> None:
    tab = browser(api)
    refused = await tab.sign_in("hdg_nope")
    assert refused.status_code == 401 and "not valid" in refused.text
    assert "set-cookie" not in refused.headers
    sent = await tab.sign_in(api.key, "//evil.test/x")
    assert sent.headers["location"] == "/"


async def test_sign_out_ends_the_session(api: Api) -> None:
    tab = await signed_in(api)
    assert (await tab.get("/")).status_code == 200
    assert (await tab.post("/signout")).status_code == 303
    assert (await tab.get("/")).status_code == 401


async def test_another_origin_or_a_missing_csrf_token_changes_nothing(api: Api) -> None:
    tab = await signed_in(api)
    form = {"title": "Intruder", "instructions": "x", "visibility": "public"}
    assert (await tab.post("/workers/new", form, origin="http://evil.test")).status_code == 403
    assert (await tab.post("/workers/new", form, csrf="forged")).status_code == 403
    assert (await tab.post("/workers/new", form, csrf="")).status_code == 403
    listed = (await api.client.get("/api/workers")).json()
    assert listed["totalCount"] == 0
    signin = await tab.client.post(
        "/signin", data={"key": api.key}, headers={"origin": "http://evil.test"}
    )
    assert signin.status_code == 403


async def test_create_edit_search_and_delete_a_worker(api: Api) -> None:
    tab = await signed_in(api)
    created = await tab.post(
        "/workers/new",
        {
            "title": "Weather <b>bot</b>",
            "summary": "Reports the weather",
            "instructions": "Answer briefly.",
            "output_schema": '{"type": "object", "properties": {"c": {"type": "integer"}}}',
            "visibility": "private",
        },
    )
    assert created.status_code == 303
    worker_id = created.headers["location"].rsplit("/", 1)[1]
    stored = (await api.client.get("/api/workers")).json()["data"][0]
    assert (stored["id"], stored["outputSchema"]["type"]) == (worker_id, "object")
    page = await tab.get("/?q=WEATHER")
    assert "Weather &lt;b&gt;bot&lt;/b&gt;" in page.text and "private" in page.text
    assert "worker-card" not in (await tab.get("/?q=rain")).text

    edited = await tab.post(
        f"/worker/{worker_id}/edit",
        {"title": "Weather", "instructions": "Answer in Celsius.", "visibility": "public"},
    )
    assert edited.status_code == 303
    template = (await api.client.get("/api/workers")).json()["data"][0]
    assert (template["title"], template["instructions"]) == ("Weather", "Answer in Celsius.")
    assert (template["visibility"], template["outputSchema"]) == ("public", None)

    assert (await tab.post(f"/worker/{worker_id}/delete")).status_code == 303
    assert (await api.client.get("/api/workers")).json()["totalCount"] == 0


async def test_a_bad_schema_is_refused_with_the_form_kept(api: Api) -> None:
    tab = await signed_in(api)
    refused = await tab.post("/workers/new", {"title": "Rex", "output_schema": '{"type": 5}'})
    assert refused.status_code == 400
    assert "not a valid JSON Schema" in refused.text and 'value="Rex"' in refused.text
    checked = await tab.post("/workers/check-schema", {"output_schema": "[1"})
    assert "not valid JSON" in checked.text
    checked = await tab.post("/workers/check-schema", {"output_schema": '{"type": "object"}'})
    assert "Valid" in checked.text
    assert (await api.client.get("/api/workers")).json()["totalCount"] == 0


async def test_only_the_creator_edits_and_another_organization_sees_nothing(api: Api) -> None:
    worker_id = await new_worker(api.client, title="Secretive")
    bob = await signed_in(api, await api.new_key("acme", "bob@acme.test"))
    assert (await bob.get(f"/worker/{worker_id}/edit")).status_code == 403
    assert (await bob.post(f"/worker/{worker_id}/delete")).status_code == 403
    eve = await signed_in(api, await api.new_key("umbrella", "eve@umbrella.test"))
    refused = await eve.get(f"/worker/{worker_id}/edit")
    assert refused.status_code == 404 and "Secretive" not in refused.text
    assert "Secretive" not in (await eve.get("/")).text


async def test_pages_carry_a_strict_content_security_policy(api: Api) -> None:
    tab = await signed_in(api)
    page = await tab.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # scripts come from files only
