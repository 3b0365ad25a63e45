"""The queue: one jobs table for every kind of background work (turns, webhook deliveries,
outgoing mail), one claim, one lease, one way to settle.

A job is claimed under a lease whose token fences every later write of the attempt: once the
lease is lost (expired and taken over, or the job cancelled), the old attempt's writes change
nothing. What a kind's own rows do when its job is claimed or handed back (a turn's status)
is given by `KindRows`, in the claim's own transaction.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kennel.errors import LeaseLostError
from kennel.models.jobs import Claimant, ExpiredJob, Job, JobStatus
from kennel.storage.database import Database
from kennel.storage.statements import Prebuilt, new_values, one_of, setting
from kennel.storage.tables import EpochMillis, jobs
from kennel.storage.wakeups import JOBS_TOPIC

QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
DONE = JobStatus.DONE.value
FAILED = JobStatus.FAILED.value
CANCELLED = JobStatus.CANCELLED.value

NO_LEASE: dict[str, object] = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}


@dataclass(frozen=True, slots=True)
class KindRows:
    """What a kind's own rows do as its jobs move, inside the queue's transaction."""

    claimed: Callable[[sa.Connection, Sequence[str], datetime], None]
    """Jobs of these refs were claimed at this moment."""
    returned: Callable[[sa.Connection, Sequence[str], bool], None]
    """Jobs of these refs went back to the queue; True when the attempt was spent."""


class JobStore:
    """Claims, leases and settles jobs; each method is one transaction."""

    def __init__(self, database: Database, rows: Mapping[str, KindRows]) -> None:
        self._db = database
        self._rows = rows

    async def claim(
        self, kinds: Collection[str], owner: str, limit: int, now: datetime, lease: timedelta
    ) -> list[Job]:
        """Lease up to `limit` due jobs of `kinds`, earliest first; jobs sharing a lock key
        (the turns of one task) run one at a time, in order."""
        query = _claimable(self._db.dialect.claiming, tuple(sorted(kinds)))
        params = {"now": now, "limit": limit}

        def work(conn: sa.Connection) -> list[Job]:
            claimed = [
                Job(
                    job_id=row.id,
                    kind=row.kind,
                    ref=row.ref,
                    lease_token=secrets.token_hex(16),
                    attempts=row.attempts + 1,
                    max_attempts=row.max_attempts,
                )
                for row in query.rows(conn, params)
            ]
            for job in claimed:
                taken = {
                    "attempts": job.attempts,
                    "lease_owner": owner,
                    "lease_token": job.lease_token,
                    "lease_expires_at": now + lease,
                    "claimed_at": now,
                }
                _TAKE.run(conn, {"job_id": job.job_id, **new_values(taken)})
            for kind, refs in _by_kind(claimed).items():
                if kind in self._rows:
                    self._rows[kind].claimed(conn, refs, now)
            return claimed

        return await self._db.write(work)

    async def extend_leases(self, owner: str, now: datetime, lease: timedelta) -> None:
        """The heartbeat: every job this runner holds stays its own for another lease."""

        def work(conn: sa.Connection) -> None:
            conn.execute(
                jobs.update()
                .where(jobs.c.lease_owner == owner, jobs.c.status == RUNNING)
                .values(lease_expires_at=now + lease)
            )

        return await self._db.write(work)

    async def release(self, owner: str) -> int:
        """Hand back this runner's jobs on a clean shutdown, without spending an attempt."""

        def work(conn: sa.Connection) -> int:
            rows = conn.execute(
                jobs.update()
                .where(jobs.c.lease_owner == owner, jobs.c.status == RUNNING)
                .values(status=QUEUED, attempts=jobs.c.attempts - 1, **NO_LEASE)
                .returning(jobs.c.kind, jobs.c.ref)
            ).all()
            for kind, refs in _by_kind(rows).items():
                if kind in self._rows:
                    self._rows[kind].returned(conn, refs, False)
            if rows:
                self._db.publish(conn, JOBS_TOPIC)
            return len(rows)

        return await self._db.write(work)

    async def expired(self, now: datetime, *, every_running: bool = False) -> list[ExpiredJob]:
        """Running jobs past their lease (or every running job, when no runner can be alive)."""
        condition = jobs.c.status == RUNNING
        if not every_running:
            condition = sa.and_(condition, jobs.c.lease_expires_at < now)
        other = jobs.alias("other")
        others_finished = (
            sa.select(other.c.id)
            .where(
                other.c.status == DONE,
                other.c.id != jobs.c.id,
                other.c.finished_at >= jobs.c.claimed_at,
            )
            .exists()
        )
        progressed = sa.and_(
            jobs.c.progressed_at.is_not(None), jobs.c.progressed_at >= jobs.c.claimed_at
        )
        query = (
            sa.select(
                jobs.c.id,
                jobs.c.kind,
                jobs.c.ref,
                jobs.c.attempts,
                jobs.c.max_attempts,
                jobs.c.lease_token,
                jobs.c.strikes,
                jobs.c.interruptions,
                sa.case((progressed, True), else_=False).label("progressed"),
                sa.case((others_finished, True), else_=False).label("others_finished"),
            )
            .where(condition)
            .order_by(jobs.c.id)
        )

        def work(conn: sa.Connection) -> list[ExpiredJob]:
            return [
                ExpiredJob(
                    job_id=row.id,
                    kind=row.kind,
                    ref=row.ref,
                    attempts=row.attempts,
                    max_attempts=row.max_attempts,
                    lease_token=row.lease_token,
                    strikes=row.strikes,
                    interruptions=row.interruptions,
                    progressed=bool(row.progressed),
                    others_finished=bool(row.others_finished),
                )
                for row in conn.execute(query)
            ]

        return await self._db.read(work)

    async def requeue(
        self, expired: ExpiredJob, now: datetime, reason: str, *, strikes: int, interruptions: int
    ) -> bool:
        """Put an interrupted job back in the queue without spending its attempt (an
        interruption is not the job's own failure); False if someone else already handled it."""

        def work(conn: sa.Connection) -> bool:
            values = {"strikes": strikes, "interruptions": interruptions}
            if not _back(conn, expired.claim(), now, reason, False, **values):
                return False
            if expired.kind in self._rows:
                self._rows[expired.kind].returned(conn, [expired.ref], False)
            self._db.publish(conn, JOBS_TOPIC)
            return True

        return await self._db.write(work)

    async def conclude(
        self, job: Job, now: datetime, error: str | None, retry_at: datetime | None
    ) -> bool:
        """End an attempt that has nothing else to record (see `conclude`)."""

        def work(conn: sa.Connection) -> bool:
            if not conclude(conn, job, now, error, retry_at):
                return False
            if retry_at is not None and job.kind in self._rows:
                self._rows[job.kind].returned(conn, [job.ref], True)
            return True

        return await self._db.write(work)

    async def next_due(self, kinds: Collection[str]) -> datetime | None:
        """When the earliest queued job of `kinds` is due; None when none is queued."""
        query = sa.select(sa.func.min(jobs.c.run_after)).where(
            jobs.c.kind.in_(list(kinds)), jobs.c.status == QUEUED
        )

        def work(conn: sa.Connection) -> datetime | None:
            moment: datetime | None = conn.execute(query).scalar_one()
            return moment

        return await self._db.read(work)

    async def waiting(self, kinds: Collection[str]) -> int:
        """How many jobs of `kinds` are queued or running."""
        query = (
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.kind.in_(list(kinds)), jobs.c.status.in_((QUEUED, RUNNING)))
        )
        return int(await self._db.read(lambda conn: conn.execute(query).scalar_one()))


def enqueue(
    conn: sa.Connection,
    kind: str,
    ref: str,
    now: datetime,
    *,
    max_attempts: int,
    lock_key: str | None = None,
    claimant: Claimant | None = None,
) -> Job | None:
    """Queue a job in the caller's transaction (with the rows it works on); the caller
    publishes `JOBS_TOPIC` so that a runner wakes up.

    With a `claimant`, the job is stored claimed by it instead, as a claim would leave it (its
    first attempt, leased), and returned: the claimant starts it once the transaction commits,
    and no runner needs waking. The caller makes sure no earlier job of `lock_key` holds it
    back (`holds_back`).
    """
    values = {
        "kind": kind,
        "ref": ref,
        "lock_key": lock_key,
        "status": QUEUED,
        "run_after": now,
        "max_attempts": max_attempts,
        "created_at": now,
    }
    if claimant is None:
        _INSERT.run(conn, values)
        return None
    token = secrets.token_hex(16)
    claimed = {
        "status": RUNNING,
        "attempts": 1,
        "lease_owner": claimant.owner,
        "lease_token": token,
        "lease_expires_at": now + claimant.lease,
        "claimed_at": now,
    }
    job_id = _INSERT_CLAIMED.scalar_one(conn, {**values, **claimed})
    return Job(int(job_id), kind, ref, token, attempts=1, max_attempts=max_attempts)


def holds_back(conn: sa.Connection, lock_key: str) -> bool:
    """Whether a job of `lock_key` is queued or running: a new one must wait its turn."""
    return _HOLDING.first(conn, {"lock_key": lock_key}) is not None


def fence(conn: sa.Connection, job: Job, **values: object) -> None:
    """Touch a job the caller's attempt holds; `LeaseLostError` if it no longer does."""
    if _set_held(conn, job, values) == 0:
        raise LeaseLostError(f"{job.kind} {job.ref}: this attempt no longer holds its job")


def settle(
    conn: sa.Connection, job: Job, status: str, now: datetime, error: str | None = None
) -> bool:
    """End a job the caller's attempt holds (done, failed or cancelled); False if it no longer
    holds it (the job moved on, or was claimed again), and then nothing changes."""
    values = {"status": status, "finished_at": now, "last_error": error, **NO_LEASE}
    return bool(_set_held(conn, job, values))


def cancel_queued(
    conn: sa.Connection, kind: str, refs: Sequence[str] | sa.Select[Any], now: datetime
) -> int:
    """Take queued jobs of `kind` working on `refs` out of the queue; how many there were."""
    result = conn.execute(
        jobs.update()
        .where(jobs.c.kind == kind, jobs.c.ref.in_(refs), jobs.c.status == QUEUED)
        .values(status=CANCELLED, finished_at=now)
    )
    return int(result.rowcount)


def take_away(conn: sa.Connection, kind: str, ref: str, now: datetime) -> bool:
    """Cancel the running job of `ref`, whoever holds it (its process is gone or does not
    answer): whatever its attempt still writes is refused. False if none is running."""
    result = conn.execute(
        jobs.update()
        .where(jobs.c.kind == kind, jobs.c.ref == ref, jobs.c.status == RUNNING)
        .values(status=CANCELLED, finished_at=now, **NO_LEASE)
    )
    return bool(result.rowcount)


def conclude(
    conn: sa.Connection, job: Job, now: datetime, error: str | None, retry_at: datetime | None
) -> bool:
    """End an attempt the caller holds, the same way for every kind: done when it worked (no
    `error`), due again at `retry_at`, or failed for good. False if the claim was lost.

    A retry wakes no runner: the one that set it knows when it is due (and any runner looks
    again when idle)."""
    if error is None:
        return settle(conn, job, DONE, now)
    if retry_at is not None:
        return _back(conn, job, retry_at, error, True)
    return settle(conn, job, FAILED, now, error)


def _back(
    conn: sa.Connection,
    job: Job,
    run_after: datetime,
    error: str,
    spent: bool,
    **values: object,
) -> bool:
    # The held row's attempts are the claim's own (only a claim sets them, with a new token).
    attempts = job.attempts if spent else job.attempts - 1
    back = {"status": QUEUED, "run_after": run_after, "last_error": error, "attempts": attempts}
    return bool(_set_held(conn, job, {**back, **values, **NO_LEASE}))


def _set_held(conn: sa.Connection, job: Job, values: Mapping[str, object]) -> int:
    """Set plain `values` on the job if the caller's attempt still holds it; rows changed."""
    params = {"job_id": job.job_id, "held_token": job.lease_token, **new_values(values)}
    return _held_update(frozenset(values)).run(conn, params)


# Statements of every job's claim and settling, built once (see `kennel.storage`).
_INSERT = Prebuilt(jobs.insert())
_INSERT_CLAIMED = Prebuilt(jobs.insert().returning(jobs.c.id))
_HOLDING = Prebuilt(
    sa.select(jobs.c.id)
    .where(jobs.c.lock_key == sa.bindparam("lock_key"), one_of(jobs.c.status, (QUEUED, RUNNING)))
    .limit(1)
)
_TAKE = Prebuilt(
    jobs.update()
    .where(jobs.c.id == sa.bindparam("job_id"))
    .values(
        status=RUNNING,
        **setting(("attempts", "lease_owner", "lease_token", "lease_expires_at", "claimed_at")),
    )
)


@functools.cache
def _held_update(names: frozenset[str]) -> Prebuilt:
    """The update of a held job setting `names` (a handful of sets: fencing, settling)."""
    held = jobs.update().where(
        jobs.c.id == sa.bindparam("job_id"),
        jobs.c.lease_token == sa.bindparam("held_token"),
        jobs.c.status == RUNNING,
    )
    return Prebuilt(held.values(setting(names)))


@functools.lru_cache(maxsize=16)
def _claimable(claiming: Callable[..., sa.Select[Any]], kinds: tuple[str, ...]) -> Prebuilt:
    """Due jobs of `kinds` that no earlier job of their lock key holds back, for a claim of
    `:limit` at `:now` (built once per dialect and set of kinds)."""
    earlier = jobs.alias("earlier")
    blocked = (
        sa.select(earlier.c.id)
        .where(
            earlier.c.lock_key == jobs.c.lock_key,
            earlier.c.id < jobs.c.id,
            one_of(earlier.c.status, (QUEUED, RUNNING)),
        )
        .exists()
    )
    query = (
        sa.select(jobs.c.id, jobs.c.kind, jobs.c.ref, jobs.c.attempts, jobs.c.max_attempts)
        .where(
            one_of(jobs.c.kind, kinds),
            jobs.c.status == QUEUED,
            jobs.c.run_after <= sa.bindparam("now", type_=EpochMillis),
            ~blocked,
        )
        .order_by(jobs.c.run_after, jobs.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    return Prebuilt(claiming(query, of=jobs))


def _by_kind(rows: Sequence[Job] | Sequence[sa.Row[tuple[str, str]]]) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for row in rows:
        refs.setdefault(row.kind, []).append(row.ref)
    return refs
