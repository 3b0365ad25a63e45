"""Credits: the one place an organization's balance goes down."""

from __future__ import annotations

import sqlalchemy as sa

from kennel.storage.database import Database
from kennel.storage.statements import Prebuilt
from kennel.storage.tables import organizations


class BillingStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def debit(self, organization_id: str, credits: int) -> None:
        """Take credits spent outside a turn (designing a worker) from the balance."""
        await self._db.write(lambda conn: debit(conn, organization_id, credits))


def debit(conn: sa.Connection, organization_id: str, credits: int) -> None:
    """Take `credits` from the organization's balance, if it has one (no balance: unlimited),
    in the caller's transaction (a turn's end bills it with its outcome)."""
    if credits:
        _DEBIT.run(conn, {"organization_id": organization_id, "credits": credits})


_DEBIT = Prebuilt(  # built once: every billed turn runs it (see `kennel.storage`)
    organizations.update()
    .where(
        organizations.c.id == sa.bindparam("organization_id"),
        organizations.c.credit_balance.is_not(None),
    )
    .values(
        credit_balance=organizations.c.credit_balance - sa.bindparam("credits", type_=sa.BigInteger)
    )
)
