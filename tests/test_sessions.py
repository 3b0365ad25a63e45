"""Dashboard sessions: a signed cookie bound to a key, and the secret that signs them."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kennel.errors import AuthenticationError
from kennel.services.sessions import SECRET_FILE, SessionService, load_or_create_secret
from kennelapp import Api, kennel_api, settings_for


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, None), with_runner=False) as running:
        yield running


def test_the_secret_is_made_once_kept_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path, None)
    assert len(first) >= 32
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path, None) == first
    assert load_or_create_secret(tmp_path, "configured-secret-value") == "configured-secret-value"


async def test_a_session_survives_a_restart_but_not_a_forged_or_foreign_cookie(
    api: Api, tmp_path: Path
) -> None:
    auth = api.kennel.services.auth
    sessions = SessionService(auth, load_or_create_secret(tmp_path, None), 3600)
    cookie, session = await sessions.sign_in(api.key)
    restarted = SessionService(auth, load_or_create_secret(tmp_path, None), 3600)
    assert (await restarted.session(cookie)) == session
    # A signature's first character is all signature: its last may carry unused bits.
    payload, _, signature = cookie.rpartition(".")
    forged = f"{payload}.{'B' if signature.startswith('A') else 'A'}{signature[1:]}"
    for bad in (forged, "", "garbage"):
        with pytest.raises(AuthenticationError):
            await restarted.session(bad)
    other = SessionService(auth, "another-secret-of-some-length", 3600)
    with pytest.raises(AuthenticationError):
        await other.session(cookie)
    with pytest.raises(AuthenticationError):
        await sessions.sign_in("hdg_not-a-key")
