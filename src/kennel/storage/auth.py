"""Organizations, users and API keys."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from kennel import ids
from kennel.errors import NotFoundError
from kennel.models import Organization, Principal, User
from kennel.storage.database import Database
from kennel.storage.organizations import organization_from
from kennel.storage.statements import Prebuilt
from kennel.storage.tables import api_keys, organizations, users

# Every request checks its key: built once (see `kennel.storage` on prebuilt statements).
_ACTIVE_KEY = (api_keys.c.id, api_keys.c.organization_id, api_keys.c.user_id)
_ACTIVE_KEY_BY_HASH = Prebuilt(
    sa.select(*_ACTIVE_KEY).where(
        api_keys.c.key_hash == sa.bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
    )
)
_ACTIVE_KEY_BY_ID = Prebuilt(
    sa.select(*_ACTIVE_KEY).where(
        api_keys.c.id == sa.bindparam("key_id"), api_keys.c.revoked_at.is_(None)
    )
)


class AuthStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def ensure_member(
        self, org_name: str, email: str, now: datetime
    ) -> tuple[Organization, User]:
        """Find or create the organization and its user, in one transaction."""

        def work(conn: sa.Connection) -> tuple[Organization, User]:
            org_row = conn.execute(
                sa.select(organizations).where(organizations.c.name == org_name)
            ).first()
            if org_row is None:
                org = Organization(ids.organization_id(), org_name, None, now)
                conn.execute(
                    organizations.insert().values(
                        id=org.id, name=org.name, credit_balance=None, created_at=now
                    )
                )
            else:
                org = organization_from(org_row)
            user_row = conn.execute(
                sa.select(users).where(users.c.organization_id == org.id, users.c.email == email)
            ).first()
            if user_row is None:
                user = User(ids.user_id(), org.id, email, now)
                conn.execute(
                    users.insert().values(
                        id=user.id, organization_id=org.id, email=email, created_at=now
                    )
                )
            else:
                user = User(
                    user_row.id, user_row.organization_id, user_row.email, user_row.created_at
                )
            return org, user

        return await self._db.write(work)

    async def create_api_key(self, user: User, key_hash: str, prefix: str, now: datetime) -> str:
        """Store a new key (only its hash) for the user; returns the key id."""
        key_id = ids.api_key_id()
        insert = api_keys.insert().values(
            id=key_id,
            organization_id=user.organization_id,
            user_id=user.id,
            key_hash=key_hash,
            prefix=prefix,
            created_at=now,
        )
        await self._db.write(lambda conn: conn.execute(insert))
        return key_id

    async def principal_for(self, key_hash: str) -> Principal | None:
        """The caller behind a key hash, or None for an unknown or revoked key."""
        params = {"key_hash": key_hash}
        row = await self._db.glance(lambda conn: _ACTIVE_KEY_BY_HASH.first(conn, params))
        return None if row is None else Principal(row.organization_id, row.user_id, row.id)

    async def principal_for_key(self, key_id: str) -> Principal | None:
        """The caller behind a key id (a dashboard session), or None once it is revoked."""
        params = {"key_id": key_id}
        row = await self._db.glance(lambda conn: _ACTIVE_KEY_BY_ID.first(conn, params))
        return None if row is None else Principal(row.organization_id, row.user_id, key_id)

    async def record_key_use(self, key_id: str, now: datetime, *, unless_since: datetime) -> bool:
        """Set the key's last use to `now` unless one was recorded at `unless_since` or later;
        True if it was set. The condition lets several processes share one write a minute."""
        update = (
            api_keys.update()
            .where(
                api_keys.c.id == key_id,
                sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < unless_since),
            )
            .values(last_used_at=now)
        )
        return bool(await self._db.write(lambda conn: conn.execute(update).rowcount))

    async def member(self, organization_id: str, user_id: str) -> tuple[Organization, User]:
        """The organization and its user, read together."""
        query = (
            sa.select(organizations, users.c.email, users.c.created_at.label("user_created_at"))
            .join(users, users.c.organization_id == organizations.c.id)
            .where(organizations.c.id == organization_id, users.c.id == user_id)
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFoundError(f"user {user_id} not found in organization {organization_id}")
        user = User(user_id, organization_id, row.email, row.user_created_at)
        return organization_from(row), user

    async def count_api_keys(self) -> int:
        query = sa.select(sa.func.count()).select_from(api_keys)
        return int(await self._db.read(lambda conn: conn.execute(query).scalar_one()))

    async def get_organization(self, organization_id: str) -> Organization:
        query = sa.select(organizations).where(organizations.c.id == organization_id)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFoundError(f"organization {organization_id} not found")
        return organization_from(row)

    async def set_credit_balance(self, organization_id: str, balance: int | None) -> None:
        update = (
            organizations.update()
            .where(organizations.c.id == organization_id)
            .values(credit_balance=balance)
        )
        result = await self._db.write(lambda conn: conn.execute(update).rowcount)
        if result == 0:
            raise NotFoundError(f"organization {organization_id} not found")
