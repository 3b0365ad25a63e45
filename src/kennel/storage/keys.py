"""API keys as their owners and operators manage them: list, find by prefix, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kennel.models import ApiKey
from kennel.storage.database import Database
from kennel.storage.tables import api_keys, organizations, users


class KeyStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def find(
        self, *, organization_id: str | None = None, user_id: str | None = None
    ) -> list[ApiKey]:
        """Every key (revoked ones too), or those of one organization or one user."""
        conditions = []
        if organization_id is not None:
            conditions.append(api_keys.c.organization_id == organization_id)
        if user_id is not None:
            conditions.append(api_keys.c.user_id == user_id)
        return await self._db.read(lambda conn: _keys(conn, *conditions))

    async def get(self, key_id: str) -> ApiKey | None:
        found = await self._db.read(lambda conn: _keys(conn, api_keys.c.id == key_id))
        return found[0] if found else None

    async def with_hash(self, key_hash: str) -> ApiKey | None:
        """The key whose SHA-256 hash this is, revoked or not."""
        found = await self._db.read(lambda conn: _keys(conn, api_keys.c.key_hash == key_hash))
        return found[0] if found else None

    async def starting_with(self, text: str, *, limit: int) -> list[ApiKey]:
        """Keys whose stored prefix starts with `text` (at most `limit` of them)."""
        # substr instead of LIKE: `_`, which every key has, is a LIKE wildcard.
        condition = sa.func.substr(api_keys.c.prefix, 1, len(text)) == text
        return await self._db.read(lambda conn: _keys(conn, condition, limit=limit))

    async def revoke(
        self, key_id: str, now: datetime, *, user_id: str | None = None
    ) -> tuple[ApiKey, bool] | None:
        """Revoke the key (only if it is `user_id`'s, when given). Returns the key and whether
        this call revoked it (False: it already was); None if there is no such key."""

        def work(conn: sa.Connection) -> tuple[ApiKey, bool] | None:
            owned = [api_keys.c.id == key_id]
            if user_id is not None:
                owned.append(api_keys.c.user_id == user_id)
            revoked = conn.execute(
                api_keys.update()
                .where(*owned, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            ).rowcount
            found = _keys(conn, *owned)
            return (found[0], bool(revoked)) if found else None

        return await self._db.write(work)


def _keys(conn: sa.Connection, *conditions: Any, limit: int | None = None) -> list[ApiKey]:
    query = (
        sa.select(
            api_keys,
            organizations.c.name.label("organization_name"),
            users.c.email.label("user_email"),
        )
        .join(organizations, organizations.c.id == api_keys.c.organization_id)
        .join(users, users.c.id == api_keys.c.user_id)
        .where(*conditions)
        .order_by(organizations.c.name, users.c.email, api_keys.c.created_at, api_keys.c.id)
        .limit(limit)
    )
    return [_api_key(row) for row in conn.execute(query)]


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        prefix=row.prefix,
        organization_id=row.organization_id,
        organization_name=row.organization_name,
        user_id=row.user_id,
        user_email=row.user_email,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
