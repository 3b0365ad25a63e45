"""API keys (spec §16.17): `hdg_` keys, stored as SHA-256 hashes, each bound to one user."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from kennel.clock import Clock
from kennel.errors import AuthenticationError, InvalidInputError
from kennel.models import Organization, Principal, User
from kennel.storage import Store

KEY_PREFIX = "hdg_"
DEFAULT_ORGANIZATION = "default"
DEFAULT_ADMIN = "admin@localhost"

PREFIX_LENGTH = 12
"""Characters of a key kept in clear to tell keys apart: `hdg_` and 8 random ones (48 bits).
Keys made before it grew from 8 keep their 8."""

KEY_USE_INTERVAL = timedelta(minutes=1)
"""A key's last use is written at most once per interval: a write per request would cost more
than the lookup it follows. A dashboard showing it is that much behind at worst."""

_NOTED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key, shown this once: only its hash and prefix are stored."""

    organization: Organization
    user: User
    key: str


# Keys are random 256-bit secrets, so a fast hash is safe; a slow KDF would only cost latency.
def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    """The part of a key that may be shown and logged: `hdg_` and 8 of its 43 random characters."""
    return key[:PREFIX_LENGTH]


def shown_key(authorization: str | None) -> str:
    """How a request's `Authorization` header appears in logs: a Kennel key's prefix
    (`hdg_ab12…`), `-` without a key, `?` for any other token (none of it is shown)."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return "-"
    if key.startswith(KEY_PREFIX) and len(key) > PREFIX_LENGTH:
        return key_prefix(key) + "…"
    return "?"


class AuthService:
    """Who is calling: API keys checked on every request, so a revoked key stops at once."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        # When this process last recorded each key's use; bounds the writes, not the checks.
        self._noted: dict[str, datetime] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization: Bearer <key>` header."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        # No cache: one indexed read per request is what lets a revocation, made by any
        # process, take effect on the next request.
        principal = await self._store.auth.principal_for(hash_key(key))
        if principal is None:
            raise AuthenticationError("invalid or revoked API key")
        await self._note_use(principal.key_id)
        return principal

    async def principal_for_key(self, key_id: str) -> Principal:
        """The caller behind a key id, such as a dashboard session's, while the key is active."""
        principal = await self._store.auth.principal_for_key(key_id)
        if principal is None:
            raise AuthenticationError("this API key was revoked: sign in again")
        await self._note_use(key_id)
        return principal

    async def _note_use(self, key_id: str) -> None:
        now = self._clock.now()
        noted = self._noted.get(key_id)
        if noted is not None and now - noted < KEY_USE_INTERVAL:
            return
        if len(self._noted) >= _NOTED_KEYS:
            self._noted.clear()
        # Noted before the write, so concurrent requests with one key write once.
        self._noted[key_id] = now
        await self._store.auth.record_key_use(key_id, now, unless_since=now - KEY_USE_INTERVAL)

    async def create_key(self, organization: str, email: str) -> CreatedKey:
        """A new key for the user, creating the organization and the user when missing."""
        organization, email = organization.strip(), email.strip().lower()
        if not organization or len(organization) > 200:
            raise InvalidInputError("organization name must be 1-200 characters")
        if "@" not in email or len(email) > 320:
            raise InvalidInputError(f"not an e-mail address: {email!r}")
        org, user = await self._store.auth.ensure_member(organization, email, self._clock.now())
        return await self._issue(org, user)

    async def create_key_for(self, principal: Principal) -> CreatedKey:
        """A new key for the caller's own user (the dashboard's "create key")."""
        org, user = await self._store.auth.member(principal.organization_id, principal.user_id)
        return await self._issue(org, user)

    async def _issue(self, org: Organization, user: User) -> CreatedKey:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = self._clock.now()
        await self._store.auth.create_api_key(user, hash_key(key), key_prefix(key), now)
        return CreatedKey(org, user, key)

    async def bootstrap_admin_key(self) -> CreatedKey | None:
        """On a fresh installation (no key at all), one admin key so the server can be used."""
        if await self._store.auth.count_api_keys():
            return None
        return await self.create_key(DEFAULT_ORGANIZATION, DEFAULT_ADMIN)
