"""Background work as jobs of named kinds: one path from a claimed job to its end.

Each kind (a turn, a webhook delivery, an outgoing mail) is a `Handler` registered under its
name, as procrastinate registers tasks: it makes one attempt at a job and records how it went.
What happens next is decided here, the same way for every kind: a failed attempt is tried
again after the kind's backoff until the job's attempts are spent, then the job fails for
good; a job whose runner died is put back without spending an attempt (see `interruption`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from kennel.clock import Clock
from kennel.models.jobs import Claimant, ExpiredJob, Job
from kennel.storage import Store

logger = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Attempt(Generic[R]):
    """How one attempt at a job went."""

    error: str | None = None
    """Why it failed; None when it worked."""
    code: str = "internal_error"
    """What kind of failure `error` is, for records that keep one (a turn's error)."""
    final: bool = False
    """Trying again can't help (a refused destination, a permanent answer)."""
    settled: bool = False
    """The handler already ended the job in its own last transaction (a turn's outcome)."""
    record: R | None = None
    """What the handler keeps of the attempt when it is settled (a delivery's log entry)."""


class Handler(Protocol[R]):
    """One kind of job: makes attempts and records them."""

    @property
    def kind(self) -> str: ...

    @property
    def cut_short_on_stop(self) -> bool:
        """A clean stop cancels attempts of this kind and hands their jobs back (a turn may run
        for many minutes, and goes on from its last step); a short attempt ends first."""
        ...

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1)."""
        ...

    async def attempt(self, job: Job) -> Attempt[R]:
        """Do the job once; an exception counts as a failed attempt."""
        ...

    async def settle(
        self, job: Job, attempt: Attempt[R], retry_at: datetime | None, now: datetime
    ) -> bool:
        """Record the attempt and end the job: done (no error), due again at `retry_at`, or
        failed for good; fenced on the job's lease, so False if the claim was lost."""
        ...


class Handoff(Protocol):
    """This process's runner, as a submission sees it: a job stored claimed by one of its free
    slots starts at once, without a claim transaction or a wake-up (the turn's first token
    comes sooner, and the runner makes one transaction fewer)."""

    def reserve(self) -> Claimant | None:
        """Hold a free slot for one job; None when none is free (or the runner has stopped)."""
        ...

    def start(self, job: Job) -> None:
        """Run a job stored claimed by the slot `reserve` held."""
        ...

    def release(self) -> None:
        """Give back the slot `reserve` held, which took no job."""
        ...


class Jobs:
    """The registry of kinds, and the one way a job moves on after an attempt."""

    def __init__(self, store: Store, clock: Clock, handlers: Iterable[Handler[Any]]) -> None:
        self._store = store
        self._clock = clock
        self._handlers = {handler.kind: handler for handler in handlers}

    @property
    def kinds(self) -> list[str]:
        return list(self._handlers)

    def cut_short_on_stop(self, job: Job) -> bool:
        return self._handlers[job.kind].cut_short_on_stop

    async def run(self, job: Job) -> datetime | None:
        """One attempt at a claimed job, settled: done, retried with backoff, or failed;
        returns when it is due again if it is retried."""
        handler = self._handlers[job.kind]
        try:
            attempt = await handler.attempt(job)
        except Exception as error:
            logger.exception(
                "%s job %s (%s), attempt %d", job.kind, job.job_id, job.ref, job.attempts
            )
            attempt = Attempt(error=f"the attempt failed: {error or type(error).__name__}")
        if attempt.settled:
            return None
        now = self._clock.now()
        retry_at = None
        if attempt.error is not None and not attempt.final and job.attempts < job.max_attempts:
            retry_at = now + timedelta(seconds=handler.backoff(job.attempts))
        if not await handler.settle(job, attempt, retry_at, now):
            logger.warning(
                "%s job %s (%s): claim lost, attempt not recorded", job.kind, job.job_id, job.ref
            )
            return None
        return retry_at

    async def recover(self, *, every_running: bool = False) -> int:
        """Put jobs whose runner died back in the queue, or end a poison job (see
        `interruption`); returns how many were handled."""
        now = self._clock.now()
        handled = 0
        for expired in await self._store.jobs.expired(now, every_running=every_running):
            strikes, interruptions, poison = interruption(expired)
            if poison:
                handled += await self._give_up(expired, interruptions, now)
                continue
            reason = f"interrupted during attempt {expired.attempts}"
            handled += await self._store.jobs.requeue(
                expired, now, reason, strikes=strikes, interruptions=interruptions
            )
        return handled

    async def _give_up(self, expired: ExpiredJob, interruptions: int, now: datetime) -> bool:
        reason = (
            f"the run was interrupted {interruptions} times in a row without getting anywhere "
            "(the server stopped or crashed while it ran, and other work went on): giving up"
        )
        logger.warning(
            "%s job %s (%s) failed: %s", expired.kind, expired.job_id, expired.ref, reason
        )
        handler = self._handlers.get(expired.kind)
        if handler is None:  # a kind this process does not run (mail without a relay)
            return await self._store.jobs.conclude(expired.claim(), now, reason, None)
        attempt: Attempt[Any] = Attempt(error=reason, code="interrupted", final=True)
        return await handler.settle(expired.claim(), attempt, None, now)


CRASH_LOOP_FACTOR = 3
"""A job interrupted this many times its attempts in a row without progress ends even when
nothing else ran meanwhile: it may be what keeps killing a server that runs nothing else."""


def interruption(expired: ExpiredJob) -> tuple[int, int, bool]:
    """How an interrupted run counts: its new strikes and interruptions, and whether the job is
    poison and ends.

    An interruption is not the job's failure: a process that dies (a deploy, an OOM kill, a
    SIGKILL) takes all its jobs with it, and they are run again without spending an attempt.
    A run that finished a step before it was cut off was moving: its count starts over. One
    that made no progress while other jobs finished is a strike: the job may be what kills its
    runner, and `max_attempts` strikes in a row end it with the reason. Interruptions while
    nothing else finished (the whole server stuck or restarting) are not strikes, but
    `CRASH_LOOP_FACTOR` x `max_attempts` of them in a row end the job too.
    """
    if expired.progressed:
        return 0, 0, False
    strikes = expired.strikes + (1 if expired.others_finished else 0)
    interruptions = expired.interruptions + 1
    poison = (
        strikes >= expired.max_attempts or interruptions >= CRASH_LOOP_FACTOR * expired.max_attempts
    )
    return strikes, interruptions, poison
