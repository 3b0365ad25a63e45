"""Claims turn jobs, keeps their leases alive, and runs each with the turn service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta

from kennel.clock import Clock
from kennel.config import Settings
from kennel.models import TurnJob
from kennel.services.turns import TurnService
from kennel.storage import Store
from kennel.storage.wakeups import JOBS_TOPIC

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class Runner:
    """Runs up to `runner_concurrency` turns at once; `run()` lasts until cancelled.

    Leases are renewed by a heartbeat every third of the lease; a reaper hands jobs of dead
    runners back to the queue. With `sole_runner` (SQLite, where a file lock guarantees no
    other process), every job still marked running at start belongs to a dead run.
    """

    def __init__(
        self,
        store: Store,
        turns: TurnService,
        clock: Clock,
        settings: Settings,
        *,
        sole_runner: bool,
    ) -> None:
        self._store = store
        self._turns = turns
        self._clock = clock
        self._concurrency = settings.runner_concurrency
        self._lease = timedelta(seconds=settings.job_lease_seconds)
        self._sole_runner = sole_runner
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._active: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run until `stop()`: the loops end between database calls, never in the middle of one
        (a query cancelled mid-flight can leave a PostgreSQL connection unusable)."""
        await self._turns.recover(every_running=self._sole_runner)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._every(self._lease.total_seconds() / 3, self._heartbeat))
                group.create_task(self._every(self._lease.total_seconds() / 2, self._reap))
                await self._claim_loop(group)
                for task in list(self._active):
                    task.cancel()
        finally:
            await asyncio.shield(self._release())

    def stop(self) -> None:
        self._stopping.set()
        self._slot_freed.set()
        self._store.database.wakeups.publish_local(JOBS_TOPIC)

    async def _claim_loop(self, group: asyncio.TaskGroup) -> None:
        wakeups = self._store.database.wakeups
        with wakeups.subscribe(JOBS_TOPIC) as new_jobs:
            while not self._stopping.is_set():
                free = self._concurrency - len(self._active)
                claimed = []
                if free > 0:
                    claimed = await self._store.runs.claim_turns(
                        self.owner, free, self._clock.now(), self._lease
                    )
                for job in claimed:
                    task = group.create_task(self._turns_run(job))
                    self._active.add(task)
                    task.add_done_callback(self._finished)
                if free > 0 and len(claimed) == free:
                    continue
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                else:
                    await new_jobs.wait(POLL_SECONDS)

    async def _turns_run(self, job: TurnJob) -> None:
        try:
            await self._turns.run(job)
        except Exception:
            if self._stopping.is_set():
                logger.info(
                    "turn %s interrupted by shutdown; it goes back to the queue", job.turn_id
                )
            else:
                logger.exception("turn job failed; it will be retried when its lease expires")

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._slot_freed.set()

    async def _every(self, seconds: float, action: Callable[[], Awaitable[object]]) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await action()
            except Exception:
                logger.exception("runner housekeeping failed (%s)", getattr(action, "__name__", ""))

    async def _heartbeat(self) -> None:
        await self._store.runs.extend_leases(self.owner, self._clock.now(), self._lease)

    async def _reap(self) -> None:
        await self._turns.recover()

    async def _release(self) -> None:
        try:
            released = await self._store.runs.release(self.owner)
        except Exception:
            logger.exception("could not hand back running jobs")
            return
        if released:
            logger.info("handed back %d unfinished turn(s) to the queue", released)
