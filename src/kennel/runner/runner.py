"""Claims jobs of every kind, keeps their leases alive, and hands each to its handler."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from kennel.clock import Clock, seconds_until
from kennel.config import Settings
from kennel.models.jobs import Claimant, Job
from kennel.services.jobs import Jobs
from kennel.storage import JOBS_TOPIC, Store, Subscription

logger = logging.getLogger(__name__)

MAX_SLEEP_SECONDS = 60.0
"""Look again at least this often: a wake-up is a hint, never the only way to see new jobs."""


class Runner:
    """Runs up to `runner_concurrency` jobs at once, of every registered kind; `run()` lasts
    until `stop()`.

    Leases are renewed by a heartbeat every third of the lease; a reaper hands jobs of dead
    runners back to the queue. With `sole_runner` (SQLite, where a file lock guarantees no
    other process), every job still marked running at start belongs to a dead run. Between
    claims it sleeps until the next job is due or a commit publishes `JOBS_TOPIC`.
    """

    def __init__(
        self,
        store: Store,
        jobs: Jobs,
        clock: Clock,
        settings: Settings,
        *,
        sole_runner: bool,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._clock = clock
        self._concurrency = settings.runner_concurrency
        self._lease = timedelta(seconds=settings.job_lease_seconds)
        self._sole_runner = sole_runner
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._active: dict[asyncio.Task[None], Job] = {}
        self._reserved = 0
        """Slots submissions hold for the jobs they are storing (see `reserve`)."""
        self._group: asyncio.TaskGroup | None = None
        self._retries: list[datetime] = []
        """When retries this process set are due (a heap)."""
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()

    async def run(self) -> None:
        """Run until `stop()`: the loops end between database calls, never in the middle of one
        (a query cancelled mid-flight can leave a PostgreSQL connection unusable)."""
        await self._jobs.recover(every_running=self._sole_runner)
        queued = await self._store.jobs.next_due(self._jobs.kinds)
        if queued is not None:  # retries set before this start
            heapq.heappush(self._retries, queued)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._ready.set()
                group.create_task(self._every(self._lease.total_seconds() / 3, self._heartbeat))
                group.create_task(self._every(self._lease.total_seconds() / 2, self._reap))
                await self._claim_loop()
                self._group = None
                for task, job in list(self._active.items()):
                    if self._jobs.cut_short_on_stop(job):
                        task.cancel()
        finally:
            self._group = None
            await asyncio.shield(self._release())

    async def ready(self) -> None:
        """Until `run` has recovered what an earlier run left and takes work: from then on a
        submission can start its turn as it stores it (`reserve`)."""
        await self._ready.wait()

    def stop(self) -> None:
        self._stopping.set()
        self._slot_freed.set()
        self._store.database.wakeups.publish_local(JOBS_TOPIC)

    def reserve(self) -> Claimant | None:
        """Hold a free slot for a job a submission is storing claimed (`Handoff`)."""
        if self._group is None or self._stopping.is_set() or self._free() <= 0:
            return None
        self._reserved += 1
        return Claimant(self.owner, self._lease)

    def start(self, job: Job) -> None:
        """Run a job stored claimed by a slot `reserve` held. Once the runner is stopping it is
        not started: `_release` hands it back to the queue with the others, or (past that)
        the next start of a runner recovers it."""
        self._reserved -= 1
        if self._group is not None:
            self._launch(self._group, job)

    def release(self) -> None:
        """Give back a slot `reserve` held, which took no job."""
        self._reserved -= 1
        self._slot_freed.set()

    async def work_due(self, *kinds: str) -> int:
        """Claim the jobs of `kinds` (default: every kind) due now and run them to their end,
        here and now; returns how many were claimed. (The claim loop does the same on its own;
        this is for a caller that moved the clock.)"""
        claimed = await self._claim(list(kinds) or self._jobs.kinds, self._concurrency)
        await asyncio.gather(*(self._run(job) for job in claimed))
        return len(claimed)

    async def _claim_loop(self) -> None:
        wakeups = self._store.database.wakeups
        with wakeups.subscribe(JOBS_TOPIC) as new_jobs:
            while not self._stopping.is_set():
                free = self._free()
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                claimed = await self._claim(self._jobs.kinds, free)
                for job in claimed:
                    assert self._group is not None  # set for as long as this loop runs
                    self._launch(self._group, job)
                if len(claimed) < free:
                    await self._sleep(new_jobs)

    def _free(self) -> int:
        return self._concurrency - len(self._active) - self._reserved

    def _launch(self, group: asyncio.TaskGroup, job: Job) -> None:
        task = group.create_task(self._run(job))
        self._active[task] = job
        task.add_done_callback(self._finished)

    async def _claim(self, kinds: list[str], limit: int) -> list[Job]:
        now = self._clock.now()
        return await self._store.jobs.claim(kinds, self.owner, limit, now, self._lease)

    async def _run(self, job: Job) -> None:
        try:
            retry_at = await self._jobs.run(job)
        except Exception:  # settling failed (the database is away): the lease will run out
            logger.exception(
                "%s job %s: not settled; taken over when its lease expires", job.kind, job.job_id
            )
            return
        if retry_at is not None:
            heapq.heappush(self._retries, retry_at)

    async def _sleep(self, new_jobs: Subscription) -> None:
        """Until a commit publishes `JOBS_TOPIC` or the next retry this process knows of is due.
        An idle runner also looks in the queue for retries it does not know of (set by a
        process that has stopped) once in a while: no claim spends a statement on it."""
        now = self._clock.now()
        while self._retries and self._retries[0] <= now:
            heapq.heappop(self._retries)  # the claim just made took it, or it waits its turn
        due = seconds_until(self._retries[0], now) if self._retries else None
        if await new_jobs.wait(MAX_SLEEP_SECONDS if due is None else min(due, MAX_SLEEP_SECONDS)):
            return
        if due is None:
            queued = await self._store.jobs.next_due(self._jobs.kinds)
            if queued is not None and queued > now:
                heapq.heappush(self._retries, queued)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
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
        await self._store.jobs.extend_leases(self.owner, self._clock.now(), self._lease)

    async def _reap(self) -> None:
        await self._jobs.recover()

    async def _release(self) -> None:
        try:
            released = await self._store.jobs.release(self.owner)
        except Exception:
            logger.exception("could not hand back running jobs")
            return
        if released:
            logger.info("handed back %d unfinished job(s) to the queue", released)
