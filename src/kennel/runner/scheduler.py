"""Fires schedules when they are due, in every process that runs turns."""

from __future__ import annotations

import asyncio
import logging

from kennel.services.schedules import ScheduleService
from kennel.storage.wakeups import SCHEDULES_TOPIC, Wakeups

logger = logging.getLogger(__name__)

MAX_SLEEP_SECONDS = 60.0
"""Re-read the schedules at least this often (a change in another process may go unheard)."""
RETRY_SECONDS = 5.0


class Scheduler:
    """Sleeps until the next schedule is due, or until a schedule is created or cancelled, then
    fires what is due. Several processes may do this at once: each firing happens once."""

    def __init__(self, schedules: ScheduleService, wakeups: Wakeups) -> None:
        self._schedules = schedules
        self._wakeups = wakeups
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run until `stop()`; a firing in progress is finished first."""
        with self._wakeups.subscribe(SCHEDULES_TOPIC) as changed:
            while not self._stopping.is_set():
                sleep = await self._tick()
                if not self._stopping.is_set():
                    await changed.wait(sleep)

    def stop(self) -> None:
        self._stopping.set()
        self._wakeups.publish_local(SCHEDULES_TOPIC)

    async def _tick(self) -> float:
        """Fire what is due; returns how long to sleep before the next look."""
        try:
            fired = await self._schedules.fire_due()
            for run in fired:
                if run.skip_reason is None:
                    logger.info("schedule %s started task %s", run.schedule_id, run.task_id)
                else:
                    logger.info("schedule %s skipped: %s", run.schedule_id, run.skip_reason)
            due = await self._schedules.seconds_until_due()
        except Exception:
            logger.exception("firing schedules failed; retrying in %.0f s", RETRY_SECONDS)
            return RETRY_SECONDS
        return MAX_SLEEP_SECONDS if due is None else min(due, MAX_SLEEP_SECONDS)
