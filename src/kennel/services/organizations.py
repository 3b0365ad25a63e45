"""Organizations for operators and the dashboard: find them, their members, their credits."""

from __future__ import annotations

import re
from dataclasses import replace

from kennel.errors import InvalidInputError, NotFoundError
from kennel.models import Member, Organization
from kennel.storage import Store

UNLIMITED = "unlimited"
MAX_CREDITS = 10**15
"""Far below the BIGINT column's limit, so charges never overflow it."""
_WHOLE_NUMBER = re.compile(r"[0-9]{1,16}")


def credit_amount(text: str) -> int | None:
    """A credit balance as typed: a whole number of credits, or `unlimited` (None: no balance,
    so tasks are never refused for credits)."""
    text = text.strip().replace("_", "").replace(",", "")
    if text.lower() == UNLIMITED:
        return None
    if not _WHOLE_NUMBER.fullmatch(text) or int(text) > MAX_CREDITS:
        raise InvalidInputError(
            f"a credit balance is a whole number from 0 to {MAX_CREDITS:,} or {UNLIMITED!r}"
        )
    return int(text)


class OrganizationService:
    """Organizations, their members and their credit balances."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def named(self, name: str) -> Organization:
        """The organization called `name`; a clear error names the ones that exist."""
        found = await self._store.organizations.named(name.strip())
        if found is not None:
            return found
        names = [org.name for org in await self._store.organizations.every()]
        known = ", ".join(repr(each) for each in names[:10]) or "none yet"
        raise NotFoundError(f"no organization is named {name!r} (organizations: {known})")

    async def get(self, organization_id: str) -> Organization:
        """The organization with this id."""
        return await self._store.auth.get_organization(organization_id)

    async def every(self) -> list[Organization]:
        """Every organization, by name."""
        return await self._store.organizations.every()

    async def set_credits(self, organization_id: str, balance: int | None) -> Organization:
        """Set the credit balance (None: unlimited); returns the organization as it now is."""
        if balance is not None and not 0 <= balance <= MAX_CREDITS:
            raise InvalidInputError(f"a credit balance is from 0 to {MAX_CREDITS:,}")
        organization = await self.get(organization_id)
        await self._store.auth.set_credit_balance(organization_id, balance)
        return replace(organization, credit_balance=balance)

    async def members(self, organization_id: str) -> list[Member]:
        """The organization's users by e-mail, with their active keys and last key use."""
        return await self._store.organizations.members(organization_id)
