"""Organizations as operators see them: by name, all of them, and their members."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kennel.models import Member, Organization, User
from kennel.storage.database import Database
from kennel.storage.tables import api_keys, organizations, users


class OrganizationStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def named(self, name: str) -> Organization | None:
        query = sa.select(organizations).where(organizations.c.name == name)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else organization_from(row)

    async def every(self) -> list[Organization]:
        """Every organization, by name."""
        query = sa.select(organizations).order_by(organizations.c.name)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [organization_from(row) for row in rows]

    async def members(self, organization_id: str) -> list[Member]:
        """The organization's users by e-mail, each with its active keys and last key use."""
        active = sa.and_(api_keys.c.id.is_not(None), api_keys.c.revoked_at.is_(None))
        query = (
            sa.select(
                users,
                sa.func.sum(sa.case((active, 1), else_=0)).label("active_keys"),
                sa.func.max(api_keys.c.last_used_at).label("last_used_at"),
            )
            .select_from(users.outerjoin(api_keys, api_keys.c.user_id == users.c.id))
            .where(users.c.organization_id == organization_id)
            .group_by(*users.c)
            .order_by(users.c.email)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [
            Member(
                User(row.id, row.organization_id, row.email, row.created_at),
                int(row.active_keys or 0),
                row.last_used_at,
            )
            for row in rows
        ]


def organization_from(row: Any) -> Organization:
    """The organization of a row selected from the organizations table."""
    return Organization(row.id, row.name, row.credit_balance, row.created_at)
