"""Per-key token buckets (spec §16.16), kept in memory by each process."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kennel.errors import RateLimitedError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` requests a second on average, bursts of up to `burst`; rate 0 turns it off."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str, now: float | None = None) -> None:
        if self._rate <= 0:
            return
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / self._rate
            raise RateLimitedError("too many requests for this API key", retry_after=wait)
        bucket.tokens -= 1
