"""Organizations for operators: usage per day, members, credit balances (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from conftest import FakeClock
from kennel.errors import InvalidInputError, NotFoundError
from kennel.models import Principal, Visibility
from kennel.services.auth import AuthService
from kennel.services.organizations import OrganizationService, credit_amount
from kennel.services.usage import UsageService
from kennel.storage import Store
from records import finished_turn, stored_worker, worker_record

PRIVATE = Visibility.PRIVATE


async def test_usage_is_summed_per_day_per_worker_and_per_organization(
    store: Store, clock: FakeClock
) -> None:
    usage = UsageService(store, clock)
    rex = await stored_worker(store, clock, title="Rex")
    ace = await stored_worker(store, clock, title="Ace")
    clock.moment = clock.moment.replace(hour=23, minute=59)
    await finished_turn(store, clock, rex, 1)
    clock.advance(120)  # the next day (UTC)
    await finished_turn(store, clock, rex, 2)
    await finished_turn(store, clock, rex, 3)
    await finished_turn(store, clock, ace, 4)
    await finished_turn(store, clock, ace, 100, finish=False)
    day_one, day_two = date(2026, 5, 11), date(2026, 5, 12)

    rows = await usage.daily(since=day_one)
    assert [(r.day, r.worker_title, r.turns, r.credits) for r in rows] == [
        (day_one, "Rex", 1, 1),
        (day_two, "Ace", 1, 4),
        (day_two, "Rex", 2, 5),
    ]
    assert (rows[2].input_tokens, rows[2].output_tokens) == (500, 20)
    assert rows[2].worker_id == rex.id and rows[2].organization_name == "acme"

    per_org = await usage.daily(since=day_one, per_worker=False)
    assert [(r.day, r.organization_id, r.worker_id, r.credits) for r in per_org] == [
        (day_one, rex.organization_id, None, 1),
        (day_two, rex.organization_id, None, 9),
    ]
    assert [r.day for r in await usage.daily(since=day_two)] == [day_two, day_two]


async def test_usage_keeps_organizations_apart_and_defaults_to_thirty_days(
    store: Store, clock: FakeClock
) -> None:
    usage = UsageService(store, clock)
    rex = await stored_worker(store, clock)
    org, user = await store.auth.ensure_member("globex", "eve@globex.test", clock.now())
    other = worker_record(org.id, user.id, clock)
    await store.workers.create(other)
    await finished_turn(store, clock, rex, 1)
    clock.advance(86_400 * 30)
    await finished_turn(store, clock, rex, 2)
    await finished_turn(store, clock, other, 7)

    assert usage.default_since() == clock.now().date() - timedelta(days=29)
    assert [(r.organization_name, r.credits) for r in await usage.daily()] == [
        ("acme", 2),
        ("globex", 7),
    ]
    only_globex = await usage.daily(organization_id=org.id, since=date(2026, 1, 1))
    assert [(r.worker_id, r.credits) for r in only_globex] == [(other.id, 7)]


async def test_a_members_report_adds_up_other_users_private_workers(
    store: Store, clock: FakeClock
) -> None:
    usage = UsageService(store, clock)
    shared = await stored_worker(store, clock, "ada@acme.test", title="Shared")
    mine = await stored_worker(store, clock, "ada@acme.test", title="Mine", visibility=PRIVATE)
    bobs = await stored_worker(store, clock, "bob@acme.test", title="Bob's", visibility=PRIVATE)
    cys = await stored_worker(store, clock, "cy@acme.test", title="Cy's", visibility=PRIVATE)
    for worker, credits in ((shared, 1), (mine, 2), (bobs, 4), (cys, 8)):
        await finished_turn(store, clock, worker, credits)
    ada = Principal(shared.organization_id, shared.user_id, "key_x")

    seen = await usage.daily_for(ada)
    assert [(r.worker_title, r.worker_id, r.turns, r.credits) for r in seen] == [
        ("Mine", mine.id, 1, 2),
        ("Shared", shared.id, 1, 1),
        (None, None, 2, 12),
    ]
    assert "Bob" not in repr(seen)
    everything = await usage.daily(organization_id=shared.organization_id)
    assert [r.worker_title for r in everything] == ["Bob's", "Cy's", "Mine", "Shared"]


async def test_members_show_their_active_keys_and_last_use(store: Store, clock: FakeClock) -> None:
    auth = AuthService(store, clock)
    organizations = OrganizationService(store)
    ada = await auth.create_key("acme", "ada@acme.test")
    await auth.create_key("acme", "ada@acme.test")
    await auth.create_key("acme", "bob@acme.test")
    await auth.create_key("globex", "eve@globex.test")
    await store.auth.ensure_member("acme", "cy@acme.test", clock.now())
    clock.advance(5)
    principal = await auth.authenticate(f"Bearer {ada.key}")
    await store.keys.revoke(principal.key_id, clock.now())

    members = await organizations.members(ada.organization.id)
    assert [(m.user.email, m.active_keys) for m in members] == [
        ("ada@acme.test", 1),
        ("bob@acme.test", 1),
        ("cy@acme.test", 0),
    ]
    assert [m.last_used_at for m in members] == [clock.now(), None, None]


async def test_credit_balances_are_shown_and_set(store: Store, clock: FakeClock) -> None:
    organizations = OrganizationService(store)
    await store.auth.ensure_member("globex", "eve@globex.test", clock.now())
    await store.auth.ensure_member("acme", "ada@acme.test", clock.now())
    acme = await organizations.named("acme")
    assert acme.credit_balance is None
    assert [org.name for org in await organizations.every()] == ["acme", "globex"]

    assert (await organizations.set_credits(acme.id, 250)).credit_balance == 250
    assert (await organizations.named(" acme ")).credit_balance == 250
    assert (await organizations.set_credits(acme.id, None)).credit_balance is None
    assert (await organizations.get(acme.id)).credit_balance is None
    with pytest.raises(InvalidInputError):
        await organizations.set_credits(acme.id, -1)
    with pytest.raises(NotFoundError) as unknown:
        await organizations.named("initech")
    assert "'acme'" in unknown.value.message and "'globex'" in unknown.value.message


@pytest.mark.parametrize(
    ("text", "amount"),
    [("0", 0), ("1500", 1500), ("1_000_000", 1_000_000), ("1,000", 1000), ("Unlimited", None)],
)
def test_credit_amounts_as_typed(text: str, amount: int | None) -> None:
    assert credit_amount(text) == amount


@pytest.mark.parametrize("text", ["-5", "1.5", "", "lots", "10000000000000000", "٣"])
def test_credit_amounts_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        credit_amount(text)
