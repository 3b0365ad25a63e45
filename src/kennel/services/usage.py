"""Usage reports: credits and tokens per day (UTC) per worker or per organization."""

from __future__ import annotations

from datetime import date, timedelta

from kennel.clock import Clock
from kennel.models import DailyUsage, Principal
from kennel.storage import Store

DEFAULT_DAYS = 30


class UsageService:
    """What the finished turns used, day by day, for the CLI's report and the dashboard's chart."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def default_since(self) -> date:
        """The first day of the default report: the last 30 days, today (UTC) included."""
        return self._clock.now().date() - timedelta(days=DEFAULT_DAYS - 1)

    async def daily(
        self,
        *,
        organization_id: str | None = None,
        since: date | None = None,
        per_worker: bool = True,
    ) -> list[DailyUsage]:
        """Per day from `since` (default: the last 30 days), per worker or per organization,
        of every organization or one."""
        return await self._store.usage.daily(
            since or self.default_since(), organization_id=organization_id, per_worker=per_worker
        )

    async def daily_for(self, principal: Principal, since: date | None = None) -> list[DailyUsage]:
        """The caller's organization per day per worker (the dashboard's chart); other users'
        private workers are one line with no worker id or title, as their titles are theirs."""
        return await self._store.usage.daily(
            since or self.default_since(),
            organization_id=principal.organization_id,
            viewer_id=principal.user_id,
        )
