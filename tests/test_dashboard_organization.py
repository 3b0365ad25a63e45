"""The organization page: the credits chart, balance, members, and the user's own API keys
(created and shown once, revoked, and a revoked key's session ended)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from dashboard import signed_in
from fakellm import FakeLLM
from kennel.dashboard.charts import OTHERS, REST, credits_chart
from kennel.models import DailyUsage
from kennelapp import Api, kennel_api, new_worker, settings_for


@pytest.fixture
async def api(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, llm)) as running:
        yield running


async def test_the_page_shows_balance_members_usage_and_keys(api: Api) -> None:
    worker_id = await new_worker(api.client, title="Counter")
    await api.client.post("/api/tasks", json={"input": "count", "workerId": worker_id})
    await api.new_key("acme", "bob@acme.test")
    org = await api.kennel.services.organizations.named("acme")
    await api.kennel.services.organizations.set_credits(org.id, 1234)
    tab = await signed_in(api)
    page = await tab.get("/organization")
    assert page.status_code == 200
    assert "1,234" in page.text and "bob@acme.test" in page.text
    assert '<svg class="chart"' in page.text and "Counter · " in page.text
    assert "this session" in page.text


async def test_a_created_key_is_shown_once_and_works(api: Api) -> None:
    tab = await signed_in(api)
    await tab.get("/organization")
    created = await tab.post("/organization/keys")
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    key = re.search(r'id="new-key">(hdg_[^<]+)<', created.text).group(1)  # type: ignore[union-attr]
    as_new = api.as_key(key)
    assert (await as_new.get("/api/workers")).status_code == 200
    listing = await tab.get("/organization")
    assert key[:12] in listing.text and key not in listing.text


async def test_revoking_the_sessions_own_key_ends_the_session(api: Api) -> None:
    key = await api.new_key("acme", "ada@acme.test")
    tab = await signed_in(api, key)
    other = await signed_in(api)  # the same user, signed in with the fixture's key
    page = await tab.get("/organization")
    key_id = re.search(
        r"/organization/keys/(key_[^/]+)/revoke",
        page.text.split("this session", 1)[1].split("</tr>", 1)[0],
    )
    assert key_id is not None
    revoked = await tab.post(f"/organization/keys/{key_id.group(1)}/revoke")
    assert revoked.status_code == 303
    assert (await tab.get("/organization")).status_code == 401
    assert (await api.as_key(key).get("/api/workers")).status_code == 401
    assert (await other.get("/organization")).status_code == 200


async def test_another_users_key_cannot_be_revoked(api: Api) -> None:
    await api.new_key("acme", "bob@acme.test")
    bob = await signed_in(api, await api.new_key("acme", "bob@acme.test"))
    bobs_keys = await bob.get("/organization")
    key_id = re.search(r"/organization/keys/(key_[^/]+)/revoke", bobs_keys.text)
    assert key_id is not None
    ada = await signed_in(api)
    await ada.get("/organization")
    refused = await ada.post(f"/organization/keys/{key_id.group(1)}/revoke")
    assert refused.status_code == 404
    assert (await bob.get("/organization")).status_code == 200


def test_the_chart_stacks_each_days_workers_and_names_hidden_ones() -> None:
    def line(day: int, worker: str | None, credits: int) -> DailyUsage:
        return DailyUsage(date(2026, 5, day), "org", "acme", worker, worker, 1, 0, 0, credits)

    usage = [line(2, "a", 30), line(2, "b", 10), line(3, "a", 5), line(3, None, 7)]
    chart = credits_chart(usage, date(2026, 5, 1), date(2026, 5, 4))
    assert len(chart.days) == 4 and chart.total == 52
    assert [s.title for s in chart.series] == ["a", "b", OTHERS]
    day_two = [bar for bar in chart.bars if bar.label.startswith("2026-05-02")]
    assert len(day_two) == 2
    tallest = max(bar.y + bar.height for bar in day_two) - min(bar.y for bar in day_two)
    assert tallest == pytest.approx((chart.height - 24 - 10) * 40 / 50)  # the axis tops at 50
    assert chart.ticks[-1][1] == "50"


def test_past_eight_workers_the_smallest_are_added_up() -> None:
    usage = [
        DailyUsage(date(2026, 5, 1), "org", "acme", f"w{n}", f"W{n}", 1, 0, 0, 100 - n)
        for n in range(10)
    ]
    usage.append(DailyUsage(date(2026, 5, 1), "org", "acme", "idle", "Idle", 1, 0, 0, 0))
    chart = credits_chart(usage, date(2026, 5, 1), date(2026, 5, 1))
    assert [s.title for s in chart.series] == [f"W{n}" for n in range(7)] + [REST]
    assert chart.series[-1].credits == 93 + 92 + 91 and chart.total == sum(range(91, 101))
