"""API keys for operators and their owners: listing, revoking, last use (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from conftest import FakeClock
from kennel.errors import AuthenticationError, InvalidInputError, NotFoundError
from kennel.models import Principal
from kennel.services.auth import AuthService, CreatedKey, hash_key
from kennel.services.keys import KeyService
from kennel.storage import Store


@pytest.fixture
def auth(store: Store, clock: FakeClock) -> AuthService:
    return AuthService(store, clock)


@pytest.fixture
def keys(store: Store, clock: FakeClock) -> KeyService:
    return KeyService(store, clock)


async def _principal(auth: AuthService, created: CreatedKey) -> Principal:
    return await auth.authenticate(f"Bearer {created.key}")


async def _key_with_prefix(store: Store, clock: FakeClock, prefix: str, email: str) -> str:
    """A key stored with a chosen prefix, as older keys or unlucky draws have; returns its id."""
    _, user = await store.auth.ensure_member("acme", email, clock.now())
    return await store.auth.create_api_key(user, hash_key(prefix + "-secret"), prefix, clock.now())


async def test_keys_are_listed_with_owner_times_and_state(
    auth: AuthService, keys: KeyService, clock: FakeClock
) -> None:
    ada = await auth.create_key("acme", "ada@acme.test")
    clock.advance(60)
    bob = await auth.create_key("acme", "bob@acme.test")
    eve = await auth.create_key("globex", "eve@globex.test")
    await keys.revoke(bob.key[:12])

    listed = await keys.list_all()
    assert [(k.organization_name, k.user_email) for k in listed] == [
        ("acme", "ada@acme.test"),
        ("acme", "bob@acme.test"),
        ("globex", "eve@globex.test"),
    ]
    first = listed[0]
    assert first.prefix == ada.key[:12] and len(first.prefix) == 12
    assert ada.key not in repr(listed)
    assert (first.organization_id, first.user_id) == (ada.organization.id, ada.user.id)
    assert first.created_at < listed[1].created_at and first.is_active
    assert not listed[1].is_active and listed[1].revoked_at == clock.now()

    in_globex = await keys.list_all(eve.organization.id)
    assert [k.user_email for k in in_globex] == ["eve@globex.test"]
    own = await keys.list_for(await _principal(auth, ada))
    assert [k.prefix for k in own] == [ada.key[:12]]


async def test_a_revoked_key_is_refused_at_once(auth: AuthService, keys: KeyService) -> None:
    created = await auth.create_key("acme", "ada@acme.test")
    principal = await _principal(auth, created)
    assert await auth.principal_for_key(principal.key_id) == principal

    revocation = await keys.revoke(created.key[:10])
    assert revocation.newly and revocation.key.id == principal.key_id

    with pytest.raises(AuthenticationError):
        await auth.authenticate(f"Bearer {created.key}")
    with pytest.raises(AuthenticationError):
        await auth.principal_for_key(principal.key_id)
    again = await keys.revoke(principal.key_id)
    assert not again.newly and again.key.revoked_at == revocation.key.revoked_at


async def test_a_key_is_found_by_id_whole_key_or_prefix(
    auth: AuthService, keys: KeyService
) -> None:
    created = await auth.create_key("acme", "ada@acme.test")
    key_id = (await _principal(auth, created)).key_id
    for selector in (key_id, created.key, created.key[:8], f"  {created.key[:12]} "):
        assert (await keys.find(selector)).id == key_id


async def test_an_ambiguous_or_unknown_selector_is_refused(
    store: Store, clock: FakeClock, keys: KeyService
) -> None:
    first = await _key_with_prefix(store, clock, "hdg_ab12cd34", "ada@acme.test")
    second = await _key_with_prefix(store, clock, "hdg_ab12", "bob@acme.test")

    with pytest.raises(InvalidInputError) as ambiguous:
        await keys.revoke("hdg_ab12")
    assert ambiguous.value.code == "ambiguous_key_prefix"
    assert first in ambiguous.value.message and second in ambiguous.value.message
    assert (await keys.revoke("hdg_ab12c")).key.id == first

    with pytest.raises(NotFoundError):
        await keys.revoke("hdg_zz99")
    with pytest.raises(NotFoundError):
        await keys.revoke("key_unknown")
    with pytest.raises(NotFoundError) as whole:
        await keys.revoke("hdg_" + "x" * 43)
    assert "x" * 20 not in whole.value.message
    for too_vague in ("hdg_", "hdg_ab1", "", "ab12cd34"):
        with pytest.raises(InvalidInputError):
            await keys.revoke(too_vague)
    assert [k.is_active for k in await keys.list_all()] == [False, True]


async def test_a_user_revokes_only_their_own_keys(auth: AuthService, keys: KeyService) -> None:
    ada = await _principal(auth, await auth.create_key("acme", "ada@acme.test"))
    bob = await _principal(auth, await auth.create_key("acme", "bob@acme.test"))

    with pytest.raises(NotFoundError):
        await keys.revoke_own(ada, bob.key_id)
    assert await auth.principal_for_key(bob.key_id) == bob
    assert (await keys.revoke_own(bob, bob.key_id)).newly
    with pytest.raises(AuthenticationError):
        await auth.principal_for_key(bob.key_id)


async def test_a_user_creates_a_key_for_themselves(auth: AuthService, keys: KeyService) -> None:
    ada = await _principal(auth, await auth.create_key("acme", "ada@acme.test"))
    created = await auth.create_key_for(ada)
    assert (created.user.id, created.organization.name) == (ada.user_id, "acme")
    again = await _principal(auth, created)
    assert (again.user_id, again.organization_id) == (ada.user_id, ada.organization_id)
    assert len(await keys.list_for(ada)) == 2


async def test_last_use_is_written_at_most_once_a_minute(
    store: Store, auth: AuthService, keys: KeyService, clock: FakeClock
) -> None:
    created = await auth.create_key("acme", "ada@acme.test")
    [fresh] = await keys.list_all()
    assert fresh.last_used_at is None

    first_use = clock.now()
    await _principal(auth, created)
    clock.advance(59)
    await _principal(auth, created)
    assert (await keys.list_all())[0].last_used_at == first_use

    # Another process notes its own first use, but the database already has a recent one.
    other_process = AuthService(store, clock)
    await _principal(other_process, created)
    assert (await keys.list_all())[0].last_used_at == first_use

    clock.advance(2)
    key_id = (await _principal(auth, created)).key_id
    assert (await keys.list_all())[0].last_used_at == clock.now()

    clock.advance(61)
    await auth.principal_for_key(key_id)
    assert (await keys.list_all())[0].last_used_at == clock.now()
