"""A background loop that does timed work when it is due (schedule firing)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kennel.storage import Wakeups

logger = logging.getLogger(__name__)

MAX_SLEEP_SECONDS = 60.0
"""Look again at least this often (a change made by another process may go unheard)."""
RETRY_SECONDS = 5.0

Tick = Callable[[], Awaitable[float | None]]
"""Does what is due now; returns the seconds until more is due (None: nothing is waiting)."""


class DueLoop:
    """Calls `tick` whenever work is due: sleeps for as long as the last tick said, or until
    `topic` is published (new work). Several processes may run the same loop on one database;
    each tick claims its work in the database, so nothing is done twice."""

    def __init__(self, name: str, tick: Tick, wakeups: Wakeups, topic: str) -> None:
        self._name = name
        self._tick = tick
        self._wakeups = wakeups
        self._topic = topic
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run until `stop()`; a tick in progress is finished first."""
        with self._wakeups.subscribe(self._topic) as woken:
            while not self._stopping.is_set():
                try:
                    due = await self._tick()
                except Exception:
                    logger.exception("%s failed; trying again in %.0f s", self._name, RETRY_SECONDS)
                    due = RETRY_SECONDS
                if not self._stopping.is_set():
                    await woken.wait(
                        MAX_SLEEP_SECONDS if due is None else min(due, MAX_SLEEP_SECONDS)
                    )

    def stop(self) -> None:
        self._stopping.set()
        self._wakeups.publish_local(self._topic)
