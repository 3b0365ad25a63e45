"""Managing API keys: list them and revoke one, as an operator or as the key's own user."""

from __future__ import annotations

from dataclasses import dataclass

from kennel.clock import Clock
from kennel.errors import InvalidInputError, NotFoundError
from kennel.models import ApiKey, Principal
from kennel.services.auth import KEY_PREFIX, hash_key
from kennel.storage import Store

KEY_ID_PREFIX = "key_"
MIN_PREFIX_LENGTH = 8
"""The shortest prefix accepted: `hdg_` and 4 characters, what the oldest keys keep in clear.
A shorter one ("hdg_") would revoke whichever single key a fresh installation has."""

_LONGEST_PREFIX = 16
_SHOWN_MATCHES = 5


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked key; `newly` is False when it had been revoked before."""

    key: ApiKey
    newly: bool


class KeyService:
    """Operators (the CLI) and key owners (the dashboard) list and revoke API keys."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def list_all(self, organization_id: str | None = None) -> list[ApiKey]:
        """Every key, revoked ones too, or those of one organization."""
        return await self._store.keys.find(organization_id=organization_id)

    async def list_for(self, principal: Principal) -> list[ApiKey]:
        """The caller's own keys, revoked ones too."""
        return await self._store.keys.find(user_id=principal.user_id)

    async def find(self, selector: str) -> ApiKey:
        """The one key `selector` names: its id (`key_…`), the whole key, or an unambiguous
        start of its prefix (at least 8 characters)."""
        text = selector.strip()
        if text.startswith(KEY_ID_PREFIX):
            found = await self._store.keys.get(text)
            if found is None:
                raise NotFoundError(f"no API key has the id {text!r}")
            return found
        if not text.startswith(KEY_PREFIX):
            raise InvalidInputError(
                f"expected a key prefix ({KEY_PREFIX}…), a key id ({KEY_ID_PREFIX}…) or a whole key"
            )
        if len(text) > _LONGEST_PREFIX:
            found = await self._store.keys.with_hash(hash_key(text))
            if found is None:  # the text is a secret: never repeat it
                raise NotFoundError("no API key matches the key given")
            return found
        return await self._by_prefix(text)

    async def _by_prefix(self, text: str) -> ApiKey:
        if len(text) < MIN_PREFIX_LENGTH:
            raise InvalidInputError(
                f"a key prefix needs at least {MIN_PREFIX_LENGTH} characters, such as "
                f"{KEY_PREFIX}ab12; the key lists show each key's prefix"
            )
        found = await self._store.keys.starting_with(text, limit=_SHOWN_MATCHES + 1)
        if not found:
            raise NotFoundError(f"no API key starts with {text!r}")
        if len(found) > 1:
            shown = ", ".join(_describe(key) for key in found[:_SHOWN_MATCHES])
            more = " and more" if len(found) > _SHOWN_MATCHES else ""
            raise InvalidInputError(
                f"{text!r} is the start of several keys' prefixes ({shown}{more}): "
                "give more characters, or the key id",
                code="ambiguous_key_prefix",
            )
        return found[0]

    async def revoke(self, selector: str) -> Revocation:
        """Revoke the key `selector` names (see `find`); revoking it again changes nothing."""
        key = await self.find(selector)
        return await self._revoke(key.id, None)

    async def revoke_own(self, principal: Principal, key_id: str) -> Revocation:
        """Revoke one of the caller's own keys; another user's key is not found."""
        return await self._revoke(key_id, principal.user_id)

    async def _revoke(self, key_id: str, user_id: str | None) -> Revocation:
        done = await self._store.keys.revoke(key_id, self._clock.now(), user_id=user_id)
        if done is None:
            raise NotFoundError(f"no API key has the id {key_id!r}")
        return Revocation(*done)


def _describe(key: ApiKey) -> str:
    state = "" if key.is_active else ", revoked"
    return f"{key.prefix} {key.id} of {key.user_email} in {key.organization_name}{state}"
