"""How long to wait before trying a failed delivery again (webhooks, e-mail replies)."""

from __future__ import annotations

import random

BACKOFF_FACTOR = 4.0
JITTER = 0.2


def backoff_seconds(attempt: int, *, first: float, most: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (from 1): `first`, then 4 times
    longer each time up to `most`, with ±20 % jitter so receivers coming back up are not hit by
    every sender at once."""
    delay = min(first * BACKOFF_FACTOR ** (attempt - 1), most)
    return delay * rng.uniform(1 - JITTER, 1 + JITTER)
