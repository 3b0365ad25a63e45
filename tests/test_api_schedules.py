"""Schedule routes over HTTP against the real app, with a fake clock for `nextRunAt`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from handinger import AsyncHandinger

from conftest import FakeClock
from kennelapp import Api, kennel_api, new_schedule, new_worker, settings_for


@pytest.fixture
async def timed(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, None), clock, with_runner=False) as running_api:
        yield running_api


async def test_each_kind_and_when_it_runs_first(timed: Api) -> None:
    # The fake clock stands at Monday 2026-05-11 09:00:00 UTC.
    worker_id = await new_worker(timed.client)
    delayed = await new_schedule(
        timed, worker_id, {"type": "delayed", "delayInSeconds": 90}, budget="high"
    )
    assert delayed == {
        "id": delayed["id"],
        "type": "delayed",
        "input": "Summarise the news",
        "budget": "high",
        "nextRunAt": "2026-05-11T09:01:30.000Z",
        "delayInSeconds": 90,
    }
    assert delayed["id"].startswith("sch_")
    interval = await new_schedule(timed, worker_id, {"type": "interval", "intervalSeconds": 3600})
    assert interval["budget"] == "standard"
    assert (interval["nextRunAt"], interval["intervalSeconds"]) == (
        "2026-05-11T10:00:00.000Z",
        3600,
    )
    scheduled = await new_schedule(
        timed, worker_id, {"type": "scheduled", "date": "2030-01-02T03:04:05.123456+02:00"}
    )
    assert scheduled == {
        "id": scheduled["id"],
        "type": "scheduled",
        "input": "Summarise the news",
        "budget": "standard",
        "nextRunAt": "2030-01-02T01:04:05.123Z",
    }
    # 09:00 on a weekday is now: the next run is strictly later, on Tuesday.
    cron = await new_schedule(timed, worker_id, {"type": "cron", "cron": "0 9 * * 1-5"})
    assert (cron["nextRunAt"], cron["cron"]) == ("2026-05-12T09:00:00.000Z", "0 9 * * 1-5")
    assert "timezone" not in cron
    daily = await new_schedule(timed, worker_id, {"type": "cron", "cron": "@daily"})
    assert daily["nextRunAt"] == "2026-05-12T00:00:00.000Z"


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2030-01-02T03:04:05Z", "2030-01-02T03:04:05.000Z"),
        ("2030-01-02T03:04:05+00:00", "2030-01-02T03:04:05.000Z"),
        ("2030-01-02T03:04:05-05:30", "2030-01-02T08:34:05.000Z"),
        ("2030-01-02T03:04:05", "2030-01-02T03:04:05.000Z"),
        ("2030-01-02", "2030-01-02T00:00:00.000Z"),
        ("2026-05-11T09:00:00Z", "2026-05-11T09:00:00.000Z"),
    ],
)
async def test_scheduled_dates_in_any_iso_form(timed: Api, date: str, expected: str) -> None:
    worker_id = await new_worker(timed.client)
    created = await new_schedule(timed, worker_id, {"type": "scheduled", "date": date})
    assert created["nextRunAt"] == expected and "date" not in created


async def test_a_naive_date_is_read_in_the_given_timezone(timed: Api) -> None:
    worker_id = await new_worker(timed.client)
    created = await new_schedule(
        timed,
        worker_id,
        {"type": "scheduled", "date": "2030-07-01T09:00:00", "timezone": "Europe/Madrid"},
    )
    assert created["nextRunAt"] == "2030-07-01T07:00:00.000Z"
    assert created["timezone"] == "Europe/Madrid"


async def test_cron_in_a_timezone_across_the_spring_dst_change(
    timed: Api, clock: FakeClock
) -> None:
    # Europe/Madrid moves from CET (+01:00) to CEST (+02:00) at 2026-03-29 01:00 UTC.
    clock.moment = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    worker_id = await new_worker(timed.client)
    nine = await new_schedule(
        timed, worker_id, {"type": "cron", "cron": "0 9 * * *", "timezone": "Europe/Madrid"}
    )
    assert nine["nextRunAt"] == "2026-03-29T07:00:00.000Z"  # 09:00 CEST, not 08:00Z
    assert nine["timezone"] == "Europe/Madrid"
    # 02:30 does not exist that night: it runs at the first instant after the gap (03:00 CEST).
    skipped = await new_schedule(
        timed, worker_id, {"type": "cron", "cron": "30 2 * * *"}, timezone="Europe/Madrid"
    )
    assert skipped["nextRunAt"] == "2026-03-29T01:00:00.000Z"
    assert skipped["timezone"] == "Europe/Madrid"
    utc = await new_schedule(timed, worker_id, {"type": "cron", "cron": "0 9 * * *"})
    assert utc["nextRunAt"] == "2026-03-29T09:00:00.000Z"


async def test_cron_in_a_timezone_across_the_autumn_dst_change(
    timed: Api, clock: FakeClock
) -> None:
    # Back from CEST to CET at 2026-10-25 01:00 UTC.
    clock.moment = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    worker_id = await new_worker(timed.client)
    nine = await new_schedule(
        timed, worker_id, {"type": "cron", "cron": "0 9 * * *", "timezone": "Europe/Madrid"}
    )
    assert nine["nextRunAt"] == "2026-10-25T08:00:00.000Z"  # 09:00 CET


async def test_limits_are_inclusive(timed: Api) -> None:
    worker_id = await new_worker(timed.client)
    for seconds in (1, 31_536_000):
        await new_schedule(timed, worker_id, {"type": "delayed", "delayInSeconds": seconds})
        await new_schedule(timed, worker_id, {"type": "interval", "intervalSeconds": seconds})


INVALID_BODIES: list[tuple[str, Any, str]] = [
    ("no input", {"when": {"type": "delayed", "delayInSeconds": 60}}, "input: Field required"),
    (
        "empty input",
        {"input": "", "when": {"type": "delayed", "delayInSeconds": 60}},
        "input: String should have at least 1",
    ),
    ("no when", {"input": "x"}, "when: Field required"),
    (
        "when not an object",
        {"input": "x", "when": "tomorrow"},
        "when: Input should be a valid dictionary",
    ),
    ("unknown type", {"input": "x", "when": {"type": "weekly"}}, "'weekly'"),
    ("no type", {"input": "x", "when": {"delayInSeconds": 60}}, "discriminator 'type'"),
    (
        "delayed without delay",
        {"input": "x", "when": {"type": "delayed"}},
        "delayInSeconds: Field required",
    ),
    (
        "delay zero",
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": 0}},
        "from 1 to 31536000",
    ),
    (
        "delay negative",
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": -5}},
        "from 1 to 31536000",
    ),
    (
        "delay too long",
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": 31536001}},
        "from 1 to 31536000",
    ),
    (
        "delay string",
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": "60"}},
        "valid integer",
    ),
    (
        "delay float",
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": 1.5}},
        "valid integer",
    ),
    (
        "delay bool",
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": True}},
        "valid integer",
    ),
    (
        "interval zero",
        {"input": "x", "when": {"type": "interval", "intervalSeconds": 0}},
        "intervalSeconds must be an integer from 1",
    ),
    (
        "interval too long",
        {"input": "x", "when": {"type": "interval", "intervalSeconds": 10**9}},
        "intervalSeconds must be an integer from 1",
    ),
    (
        "interval without value",
        {"input": "x", "when": {"type": "interval"}},
        "intervalSeconds: Field required",
    ),
    ("cron empty", {"input": "x", "when": {"type": "cron", "cron": ""}}, "at least 1 character"),
    (
        "cron blank",
        {"input": "x", "when": {"type": "cron", "cron": "   "}},
        "when.cron is required",
    ),
    ("cron four fields", {"input": "x", "when": {"type": "cron", "cron": "* * * *"}}, "5 fields"),
    (
        "cron six fields",
        {"input": "x", "when": {"type": "cron", "cron": "0 * * * * *"}},
        "5 fields",
    ),
    (
        "cron out of range",
        {"input": "x", "when": {"type": "cron", "cron": "61 * * * *"}},
        "not a valid cron",
    ),
    ("cron nonsense", {"input": "x", "when": {"type": "cron", "cron": "every monday"}}, "5 fields"),
    (
        "cron bad nickname",
        {"input": "x", "when": {"type": "cron", "cron": "@reboot"}},
        "not a valid cron",
    ),
    (
        "cron never fires",
        {"input": "x", "when": {"type": "cron", "cron": "0 0 30 2 *"}},
        "never fires",
    ),
    ("cron without value", {"input": "x", "when": {"type": "cron"}}, "cron: Field required"),
    (
        "date not a date",
        {"input": "x", "when": {"type": "scheduled", "date": "next tuesday"}},
        "not an ISO-8601",
    ),
    (
        "date empty",
        {"input": "x", "when": {"type": "scheduled", "date": ""}},
        "at least 1 character",
    ),
    (
        "date in the past",
        {"input": "x", "when": {"type": "scheduled", "date": "2020-01-01"}},
        "in the past",
    ),
    (
        "date a second ago",
        {"input": "x", "when": {"type": "scheduled", "date": "2026-05-11T08:59:59Z"}},
        "in the past",
    ),
    ("date missing", {"input": "x", "when": {"type": "scheduled"}}, "date: Field required"),
    (
        "unknown timezone",
        {"input": "x", "when": {"type": "cron", "cron": "@daily", "timezone": "Mars/Olympus"}},
        "'Mars/Olympus' is not an IANA",
    ),
    (
        "unknown top-level timezone",
        {"input": "x", "when": {"type": "cron", "cron": "@daily"}, "timezone": "CEST"},
        "'CEST' is not an IANA",
    ),
    (
        "path-like timezone",
        {"input": "x", "when": {"type": "cron", "cron": "@daily"}, "timezone": "../etc/passwd"},
        "is not an IANA",
    ),
    (
        "two different timezones",
        {
            "input": "x",
            "when": {"type": "cron", "cron": "@daily", "timezone": "Europe/Madrid"},
            "timezone": "Europe/Paris",
        },
        "different zones",
    ),
    (
        "unknown budget",
        {"input": "x", "when": {"type": "delayed", "delayInSeconds": 1}, "budget": "huge"},
        "budget: Input should be",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "reason"), INVALID_BODIES, ids=[case for case, _, _ in INVALID_BODIES]
)
async def test_invalid_schedules_are_400(timed: Api, case: str, body: Any, reason: str) -> None:
    worker_id = await new_worker(timed.client)
    response = await timed.client.post(f"/api/workers/{worker_id}/schedules", json=body)
    assert response.status_code == 400, (case, response.text)
    error = response.json()
    assert set(error) == {"error", "code"} and reason in error["error"]
    assert response.headers["x-should-retry"] == "false"
    listed = (await timed.client.get(f"/api/workers/{worker_id}/schedules")).json()
    assert listed["schedules"] == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
async def test_a_body_that_is_not_an_object_is_400(timed: Api, raw: bytes) -> None:
    worker_id = await new_worker(timed.client)
    response = await timed.client.post(
        f"/api/workers/{worker_id}/schedules",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error", "code"}


async def test_list_shows_active_schedules_oldest_first(timed: Api, clock: FakeClock) -> None:
    worker_id = await new_worker(timed.client)
    other_worker = await new_worker(timed.client)
    path = f"/api/workers/{worker_id}/schedules"
    assert (await timed.client.get(path)).json() == {"schedules": [], "workerId": worker_id}
    first = await new_schedule(timed, worker_id, {"type": "interval", "intervalSeconds": 60})
    clock.advance(1)
    second = await new_schedule(
        timed, worker_id, {"type": "cron", "cron": "@hourly", "timezone": "Asia/Tokyo"}
    )
    clock.advance(1)
    cancelled = await new_schedule(timed, worker_id, {"type": "delayed", "delayInSeconds": 5})
    await new_schedule(timed, other_worker, {"type": "delayed", "delayInSeconds": 5})
    assert (await timed.client.delete(f"{path}/{cancelled['id']}")).json() == {"cancelled": True}

    listed = (await timed.client.get(path)).json()
    assert listed == {"schedules": [first, second], "workerId": worker_id}


async def test_cancel(timed: Api) -> None:
    worker_id = await new_worker(timed.client)
    other_worker = await new_worker(timed.client)
    created = await new_schedule(timed, worker_id, {"type": "delayed", "delayInSeconds": 60})
    path = f"/api/workers/{worker_id}/schedules/{created['id']}"

    wrong_worker = await timed.client.delete(
        f"/api/workers/{other_worker}/schedules/{created['id']}"
    )
    assert wrong_worker.status_code == 404
    unknown = await timed.client.delete(f"/api/workers/{worker_id}/schedules/sch_nope")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"

    # What the SDK sends: a JSON content type and no body at all.
    response = await timed.client.delete(path, headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json() == {"cancelled": True}
    assert (await timed.client.delete(path)).status_code == 404


async def test_any_member_who_sees_the_worker_may_schedule_it(timed: Api) -> None:
    worker_id = await new_worker(timed.client)
    private_id = await new_worker(timed.client, visibility="private")
    bob_key = await timed.new_key("acme", "bob@acme.test")
    async with timed.as_key(bob_key) as bob:
        path = f"/api/workers/{worker_id}/schedules"
        created = await bob.post(
            path, json={"input": "x", "when": {"type": "delayed", "delayInSeconds": 5}}
        )
        assert created.status_code == 200
        assert [s["id"] for s in (await bob.get(path)).json()["schedules"]] == [
            created.json()["id"]
        ]
        cancelled = await bob.delete(f"{path}/{created.json()['id']}")
        assert cancelled.json() == {"cancelled": True}
        hidden = await bob.get(f"/api/workers/{private_id}/schedules")
        assert hidden.status_code == 404


async def test_other_organizations_do_not_see_schedules(timed: Api) -> None:
    worker_id = await new_worker(timed.client)
    created = await new_schedule(timed, worker_id, {"type": "delayed", "delayInSeconds": 5})
    eve_key = await timed.new_key("globex", "eve@globex.test")
    async with timed.as_key(eve_key) as eve:
        path = f"/api/workers/{worker_id}/schedules"
        assert (await eve.get(path)).status_code == 404
        assert (await eve.delete(f"{path}/{created['id']}")).status_code == 404
        posted = await eve.post(
            path, json={"input": "x", "when": {"type": "delayed", "delayInSeconds": 5}}
        )
        assert posted.status_code == 404
    assert len((await timed.client.get(path)).json()["schedules"]) == 1


async def test_schedules_of_a_deleted_worker_are_gone(timed: Api) -> None:
    worker_id = await new_worker(timed.client)
    created = await new_schedule(timed, worker_id, {"type": "delayed", "delayInSeconds": 5})
    assert (await timed.client.delete(f"/api/workers/{worker_id}")).status_code == 200
    path = f"/api/workers/{worker_id}/schedules"
    assert (await timed.client.get(path)).status_code == 404
    assert (await timed.client.delete(f"{path}/{created['id']}")).status_code == 404
    posted = await timed.client.post(
        path, json={"input": "x", "when": {"type": "delayed", "delayInSeconds": 5}}
    )
    assert posted.status_code == 404


async def test_unknown_worker_and_missing_key(timed: Api) -> None:
    assert (await timed.client.get("/api/workers/wrk_nope/schedules")).status_code == 404
    async with timed.as_key("hdg_not_a_key") as stranger:
        assert (await stranger.get("/api/workers/wrk_nope/schedules")).status_code == 401


async def test_the_sdk_reads_every_schedule_strictly(timed: Api, clock: FakeClock) -> None:
    worker_id = await new_worker(timed.client)
    whens: list[Any] = [
        {"type": "delayed", "delay_in_seconds": 60},
        {"type": "interval", "interval_seconds": 60},
        {"type": "cron", "cron": "0 9 * * 1-5"},
        {"type": "scheduled", "date": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)},
    ]
    async with httpx.AsyncClient(transport=timed.client._transport) as http:
        sdk = AsyncHandinger(
            api_key=timed.key,
            base_url="http://kennel.test",
            http_client=http,
            max_retries=0,
            _strict_response_validation=True,
        )
        made = []
        for when in whens:
            clock.advance(1)
            made.append(
                await sdk.workers.schedules.create(worker_id, input="x", when=when, budget="low")
            )
        assert [s.type for s in made] == ["delayed", "interval", "cron", "scheduled"]
        assert made[3].next_run_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        listed = await sdk.workers.schedules.list(worker_id)
        assert [s.id for s in listed.schedules] == [s.id for s in made]
        # The SDK sends this DELETE with a JSON content type and an empty body.
        cancelled = await sdk.workers.schedules.cancel(made[0].id, worker_id=worker_id)
        assert cancelled.cancelled is True
