"""Time source, injected so schedules and leases can be tested without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 with milliseconds and `Z`, the wire form of every camelCase timestamp."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def seconds_until(moment: datetime | None, now: datetime) -> float | None:
    """How long from `now` until `moment` (0 if it has passed); None without a moment."""
    if moment is None:
        return None
    return max(0.0, (moment - now).total_seconds())
