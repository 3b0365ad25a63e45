"""API keys (spec §16.17): `hdg_` keys, stored as SHA-256 hashes, each bound to one user."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from kennel.clock import Clock
from kennel.errors import AuthenticationError, InvalidInputError
from kennel.models import Organization, Principal, User
from kennel.storage import Store

KEY_PREFIX = "hdg_"
PREFIX_LENGTH = 8
DEFAULT_ORGANIZATION = "default"
DEFAULT_ADMIN = "admin@localhost"

# Keys are random 256-bit secrets, so a fast hash is safe; a slow KDF would only cost latency.
_CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class CreatedKey:
    organization: Organization
    user: User
    key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    """The part of a key that may be shown and logged: `hdg_` and 4 of its 43 random characters."""
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
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization: Bearer <key>` header."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        principal = await self._store.auth.principal_for(digest)
        if principal is None:
            raise AuthenticationError("invalid API key")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + _CACHE_SECONDS, principal)
        return principal

    async def create_key(self, organization: str, email: str) -> CreatedKey:
        """A new key for the user, creating the organization and the user when missing."""
        organization, email = organization.strip(), email.strip().lower()
        if not organization or len(organization) > 200:
            raise InvalidInputError("organization name must be 1-200 characters")
        if "@" not in email or len(email) > 320:
            raise InvalidInputError(f"not an e-mail address: {email!r}")
        now = self._clock.now()
        org, user = await self._store.auth.ensure_member(organization, email, now)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        await self._store.auth.create_api_key(user, hash_key(key), key_prefix(key), now)
        return CreatedKey(org, user, key)

    async def bootstrap_admin_key(self) -> CreatedKey | None:
        """On a fresh installation (no key at all), one admin key so the server can be used."""
        if await self._store.auth.count_api_keys():
            return None
        return await self.create_key(DEFAULT_ORGANIZATION, DEFAULT_ADMIN)
