"""The runner's side of turns: claim jobs under a lease, append events, finish or fail.

Every write of a run is fenced by its lease token: once a lease is lost (expired and taken
over, or the turn cancelled), the old run's writes raise `LeaseLostError` and change nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from kennel.errors import LeaseLostError, NotFoundError
from kennel.models import (
    CANCELLED,
    TaskStatus,
    TurnContext,
    TurnJob,
    TurnOutcome,
    TurnStep,
)
from kennel.storage.database import Database
from kennel.storage.files import forget_files, record_task_files
from kennel.storage.mail import queue_reply
from kennel.storage.sources import record_task_sources
from kennel.storage.tables import (
    EpochMillis,
    jobs,
    organizations,
    task_events,
    tasks,
    turn_steps,
    turns,
    workers,
)
from kennel.storage.tasks import TURN_JOB, task_from_row, turn_from_row
from kennel.storage.wakeups import (
    DELIVERIES_TOPIC,
    JOBS_TOPIC,
    cancel_topic,
    task_topic,
    turn_topic,
)
from kennel.storage.webhooks import queue_delivery
from kennel.storage.workers import worker_from_row


@dataclass(frozen=True, slots=True)
class ExpiredJob:
    """A running job whose runner is gone, with what recovery decides on."""

    job_id: int
    kind: str
    ref: str
    attempts: int
    max_attempts: int
    lease_token: str | None = None
    """The lost claim's token: settling fences on it, so a job claimed again is left alone."""
    strikes: int = 0
    interruptions: int = 0
    progressed: bool = False
    """The lost attempt finished a step: the turn was moving."""
    others_finished: bool = False
    """Other jobs finished while the lost attempt ran: the process was not stuck as a whole."""


class RunStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def claim_turns(
        self, owner: str, limit: int, now: datetime, lease: timedelta
    ) -> list[TurnJob]:
        """Lease up to `limit` due turn jobs, oldest first, at most one per task at a time."""
        earlier = jobs.alias("earlier")
        blocked = (
            sa.select(earlier.c.id)
            .where(
                earlier.c.lock_key == jobs.c.lock_key,
                earlier.c.id < jobs.c.id,
                earlier.c.status.in_(("queued", "running")),
            )
            .exists()
        )
        query = (
            sa.select(jobs.c.id, jobs.c.ref, jobs.c.attempts, jobs.c.max_attempts)
            .where(
                jobs.c.kind == TURN_JOB,
                jobs.c.status == "queued",
                jobs.c.run_after <= now,
                ~blocked,
            )
            .order_by(jobs.c.id)
            .limit(limit)
        )
        query = self._db.dialect.claiming(query, of=jobs)

        def work(conn: sa.Connection) -> list[TurnJob]:
            rows = conn.execute(query).all()
            if not rows:
                return []
            claimed = [
                TurnJob(
                    job_id=row.id,
                    turn_id=row.ref,
                    task_key=0,
                    lease_token=secrets.token_hex(16),
                    attempts=row.attempts + 1,
                    max_attempts=row.max_attempts,
                )
                for row in rows
            ]
            for job in claimed:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job.job_id)
                    .values(
                        status="running",
                        attempts=job.attempts,
                        lease_owner=owner,
                        lease_token=job.lease_token,
                        lease_expires_at=now + lease,
                        claimed_at=now,
                    )
                )
            turn_ids = [job.turn_id for job in claimed]
            conn.execute(
                turns.update()
                .where(turns.c.id.in_(turn_ids))
                .values(
                    status=TaskStatus.RUNNING.value,
                    started_at=sa.func.coalesce(
                        turns.c.started_at, sa.bindparam(None, now, type_=EpochMillis())
                    ),
                    attempts=turns.c.attempts + 1,
                )
            )
            task_keys = {
                row.id: row.task_key
                for row in conn.execute(
                    sa.select(turns.c.id, turns.c.task_key).where(turns.c.id.in_(turn_ids))
                )
            }
            conn.execute(
                tasks.update()
                .where(tasks.c.key.in_(set(task_keys.values())))
                .values(status=TaskStatus.RUNNING.value)
            )
            return [
                TurnJob(
                    job.job_id,
                    job.turn_id,
                    int(task_keys[job.turn_id]),
                    job.lease_token,
                    job.attempts,
                    job.max_attempts,
                )
                for job in claimed
            ]

        return await self._db.write(work)

    async def extend_leases(self, owner: str, now: datetime, lease: timedelta) -> None:
        def work(conn: sa.Connection) -> None:
            conn.execute(
                jobs.update()
                .where(jobs.c.lease_owner == owner, jobs.c.status == "running")
                .values(lease_expires_at=now + lease)
            )

        return await self._db.write(work)

    async def load_context(self, job: TurnJob) -> TurnContext:
        """The worker, task, turn and earlier completed turns' model messages of a claimed job."""

        def work(conn: sa.Connection) -> TurnContext:
            turn_row = (conn.execute(sa.select(turns).where(turns.c.id == job.turn_id))).one()
            task_row = (
                conn.execute(sa.select(tasks).where(tasks.c.key == turn_row.task_key))
            ).one()
            worker_row = (
                conn.execute(sa.select(workers).where(workers.c.id == task_row.worker_id))
            ).first()
            if worker_row is None:
                raise NotFoundError(f"worker {task_row.worker_id} not found")
            history = conn.execute(
                sa.select(turns.c.model_messages)
                .where(
                    turns.c.task_key == turn_row.task_key,
                    turns.c.seq < turn_row.seq,
                    turns.c.status == TaskStatus.COMPLETED.value,
                    turns.c.model_messages.is_not(None),
                )
                .order_by(turns.c.seq)
            )
            steps: list[TurnStep] = []
            told: list[str] = []
            if turn_row.first_event_seq is not None or turn_row.attempts > 1:
                # Taken over after a crash: go on from its last step, in the stream it began.
                steps = [
                    TurnStep(row.step, bytes(row.messages), row.state)
                    for row in conn.execute(
                        sa.select(turn_steps.c.step, turn_steps.c.messages, turn_steps.c.state)
                        .where(turn_steps.c.turn_id == job.turn_id)
                        .order_by(turn_steps.c.step)
                    )
                ]
                told = list(
                    conn.execute(
                        sa.select(task_events.c.body)
                        .where(
                            task_events.c.task_key == turn_row.task_key,
                            task_events.c.turn_id == job.turn_id,
                        )
                        .order_by(task_events.c.seq)
                    ).scalars()
                )
            return TurnContext(
                worker=worker_from_row(worker_row),
                task=task_from_row(task_row),
                turn=turn_from_row(turn_row),
                history=[bytes(blob) for (blob,) in history],
                steps=steps,
                told=told,
            )

        return await self._db.read(work)

    async def append_events(
        self, job: TurnJob, bodies: Sequence[str], now: datetime, lease: timedelta
    ) -> int:
        """Append chunks to the task's log (and extend the lease); returns the last sequence."""

        def work(conn: sa.Connection) -> int:
            _fence(conn, job, lease_expires_at=now + lease)
            self._db.publish(conn, task_topic(job.task_key))
            return _append(conn, job.task_key, job.turn_id, bodies)

        return await self._db.write(work)

    async def save_step(
        self, job: TurnJob, step: TurnStep, bodies: Sequence[str], now: datetime, lease: timedelta
    ) -> None:
        """Keep a finished step and the chunks told so far, and mark the job as moving."""

        def work(conn: sa.Connection) -> None:
            _fence(conn, job, lease_expires_at=now + lease, progressed_at=now)
            conn.execute(
                turn_steps.insert().values(
                    turn_id=job.turn_id,
                    step=step.step,
                    messages=step.messages,
                    state=step.state,
                    created_at=now,
                )
            )
            if bodies:
                _append(conn, job.task_key, job.turn_id, bodies)
                self._db.publish(conn, task_topic(job.task_key))

        return await self._db.write(work)

    async def finish_turn(
        self,
        job: TurnJob,
        outcome: TurnOutcome,
        final_bodies: Sequence[str],
        now: datetime,
        *,
        title: str | None = None,
    ) -> None:
        """Record the outcome, close the job, bill the organization, in one transaction."""

        def work(conn: sa.Connection) -> None:
            _fence(conn, job, status="done", finished_at=now)
            _append(conn, job.task_key, job.turn_id, final_bodies)
            if _record_outcome(conn, job.turn_id, job.task_key, outcome, now, title=title):
                self._db.publish(conn, DELIVERIES_TOPIC)
            self._db.publish(conn, JOBS_TOPIC, task_topic(job.task_key), turn_topic(job.turn_id))

        return await self._db.write(work)

    async def release(self, owner: str) -> int:
        """Hand back this runner's jobs on a clean shutdown, without spending an attempt."""

        def work(conn: sa.Connection) -> int:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.lease_owner == owner, jobs.c.status == "running")
                .values(status="queued", attempts=jobs.c.attempts - 1, **_NO_LEASE)
                .returning(jobs.c.ref)
            )
            refs = [ref for (ref,) in result]
            if refs:
                conn.execute(
                    turns.update()
                    .where(turns.c.id.in_(refs))
                    .values(status=TaskStatus.PENDING.value, attempts=turns.c.attempts - 1)
                )
                self._db.publish(conn, JOBS_TOPIC)
            return len(refs)

        return await self._db.write(work)

    async def expired_jobs(self, now: datetime, *, every_running: bool = False) -> list[ExpiredJob]:
        """Running jobs past their lease (or every running job, when no runner can be alive)."""
        condition = jobs.c.status == "running"
        if not every_running:
            condition = sa.and_(condition, jobs.c.lease_expires_at < now)

        other = jobs.alias("other")
        others_finished = (
            sa.select(other.c.id)
            .where(
                other.c.status == "done",
                other.c.id != jobs.c.id,
                other.c.finished_at >= jobs.c.claimed_at,
            )
            .exists()
        )
        progressed = sa.and_(
            jobs.c.progressed_at.is_not(None), jobs.c.progressed_at >= jobs.c.claimed_at
        )

        def work(conn: sa.Connection) -> list[ExpiredJob]:
            rows = conn.execute(
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
                for row in rows
            ]

        return await self._db.read(work)

    async def requeue(
        self, expired: ExpiredJob, now: datetime, reason: str, *, strikes: int, interruptions: int
    ) -> bool:
        """Put an interrupted job back in the queue without spending its attempt (an
        interruption is not the turn's own failure); False if someone else already handled it."""

        def work(conn: sa.Connection) -> bool:
            settled = _settle(
                conn,
                expired,
                status="queued",
                run_after=now,
                last_error=reason,
                attempts=jobs.c.attempts - 1,
                strikes=strikes,
                interruptions=interruptions,
            )
            if not settled:
                return False
            self._db.publish(conn, JOBS_TOPIC)
            if expired.kind == TURN_JOB:
                conn.execute(
                    turns.update()
                    .where(turns.c.id == expired.ref)
                    .values(status=TaskStatus.PENDING.value, attempts=turns.c.attempts - 1)
                )
            return True

        return await self._db.write(work)

    async def fail_turn(
        self, expired: ExpiredJob, outcome: TurnOutcome, final_bodies: Sequence[str], now: datetime
    ) -> bool:
        """Give up on an interrupted turn job for good, recording why; False if already handled."""

        def work(conn: sa.Connection) -> bool:
            reason = outcome.error.message if outcome.error else None
            if not _settle(conn, expired, status="failed", finished_at=now, last_error=reason):
                return False
            task_key = conn.execute(
                sa.select(turns.c.task_key).where(turns.c.id == expired.ref)
            ).scalar_one()
            _append(conn, task_key, expired.ref, final_bodies)
            if _record_outcome(conn, expired.ref, task_key, outcome, now):
                self._db.publish(conn, DELIVERIES_TOPIC)
            self._db.publish(conn, JOBS_TOPIC, task_topic(task_key), turn_topic(expired.ref))
            return True

        return await self._db.write(work)

    async def cancel_task(self, task_key: int, now: datetime) -> CancelledTurns:
        """Cancel every unfinished turn of the task: queued ones end `aborted` here and now;
        the running one is told to stop (`cancel_topic`) and records its own end. It is also
        marked (`incompleteReason: "cancelled"` while it runs), for a run that had not yet
        started listening."""

        def work(conn: sa.Connection) -> CancelledTurns:
            rows = conn.execute(
                sa.select(turns.c.id, turns.c.seq, jobs.c.id.label("job_id"), jobs.c.status)
                .join(jobs, sa.and_(jobs.c.kind == TURN_JOB, jobs.c.ref == turns.c.id))
                .where(turns.c.task_key == task_key, turns.c.status.in_(_UNFINISHED))
                .order_by(turns.c.seq)
            ).all()
            running = [row.id for row in rows if row.status == "running"]
            queued = [row for row in rows if row.status == "queued"]
            if running:  # the mark its run finds if it reads the turn after this (see TurnService)
                conn.execute(
                    turns.update()
                    .where(turns.c.id.in_(running))
                    .values(incomplete_reason=CANCELLED)
                )
            for row in queued:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == row.job_id, jobs.c.status == "queued")
                    .values(status="cancelled", finished_at=now)
                )
            if running:  # the running turn's end will end the task (and notify its webhook)
                conn.execute(
                    turns.update()
                    .where(turns.c.id.in_([row.id for row in queued]))
                    .values(
                        status=TaskStatus.ABORTED.value,
                        incomplete_reason=CANCELLED,
                        completed_at=now,
                    )
                )
            else:
                outcome = TurnOutcome(status=TaskStatus.ABORTED, incomplete_reason=CANCELLED)
                delivery = [_record_outcome(conn, row.id, task_key, outcome, now) for row in queued]
                if any(delivery):
                    self._db.publish(conn, DELIVERIES_TOPIC)
            topics = [cancel_topic(turn_id) for turn_id in running]
            topics += [turn_topic(row.id) for row in queued]
            self._db.publish(conn, JOBS_TOPIC, task_topic(task_key), *topics)
            return CancelledTurns(running=running, aborted=[row.id for row in queued])

        return await self._db.write(work)

    async def force_abort(
        self, turn_id: str, outcome: TurnOutcome, final_bodies: Sequence[str], now: datetime
    ) -> bool:
        """End a cancelled turn whose run did not stop (its process is gone or unreachable):
        its job is taken away, so anything that run still writes is refused. False if the
        turn had already ended."""

        def work(conn: sa.Connection) -> bool:
            row = conn.execute(
                sa.select(jobs.c.id.label("job_id"), turns.c.task_key)
                .join(turns, turns.c.id == jobs.c.ref)
                .where(jobs.c.kind == TURN_JOB, jobs.c.ref == turn_id, jobs.c.status == "running")
            ).first()
            if row is None:
                return False
            conn.execute(
                jobs.update()
                .where(jobs.c.id == row.job_id)
                .values(status="cancelled", finished_at=now, **_NO_LEASE)
            )
            _append(conn, row.task_key, turn_id, final_bodies)
            topics = [JOBS_TOPIC, task_topic(row.task_key), turn_topic(turn_id)]
            if _record_outcome(conn, turn_id, row.task_key, outcome, now):
                topics.append(DELIVERIES_TOPIC)
            self._db.publish(conn, *topics)
            return True

        return await self._db.write(work)


@dataclass(frozen=True, slots=True)
class CancelledTurns:
    running: list[str]
    """Turns that were running: their runs were told to stop."""
    aborted: list[str]
    """Turns that had not started: they ended `aborted` at once."""


_UNFINISHED = (TaskStatus.PENDING.value, TaskStatus.RUNNING.value)

_NO_LEASE: dict[str, object] = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}


def _settle(conn: sa.Connection, expired: ExpiredJob, **values: object) -> bool:
    """Take an expired job out of its dead run's hands; False if another runner already did
    (the job moved on, or was claimed again since it was found expired)."""
    result = conn.execute(
        jobs.update()
        .where(
            jobs.c.id == expired.job_id,
            jobs.c.status == "running",
            jobs.c.lease_token == expired.lease_token,
        )
        .values(**values, **_NO_LEASE)
    )
    return bool(result.rowcount)


def _fence(conn: sa.Connection, job: TurnJob, **values: object) -> None:
    result = conn.execute(
        jobs.update()
        .where(
            jobs.c.id == job.job_id,
            jobs.c.lease_token == job.lease_token,
            jobs.c.status == "running",
        )
        .values(**values)
    )
    if result.rowcount == 0:
        raise LeaseLostError(f"turn {job.turn_id}: this run no longer holds its job")


def _append(conn: sa.Connection, task_key: int, turn_id: str, bodies: Sequence[str]) -> int:
    last = int(
        (
            conn.execute(
                tasks.update()
                .where(tasks.c.key == task_key)
                .values(event_seq=tasks.c.event_seq + len(bodies))
                .returning(tasks.c.event_seq)
            )
        ).scalar_one()
    )
    if not bodies:
        return last
    first = last - len(bodies) + 1
    conn.execute(
        task_events.insert(),
        [
            {"task_key": task_key, "seq": first + offset, "turn_id": turn_id, "body": body}
            for offset, body in enumerate(bodies)
        ],
    )
    conn.execute(
        turns.update()
        .where(turns.c.id == turn_id, turns.c.first_event_seq.is_(None))
        .values(first_event_seq=first)
    )
    return last


def _record_outcome(
    conn: sa.Connection,
    turn_id: str,
    task_key: int,
    outcome: TurnOutcome,
    now: datetime,
    *,
    title: str | None = None,
) -> bool:
    """Record how a turn ended, on the turn and its task; bill it. True when a webhook delivery
    (the task ended with it) or an e-mail reply was queued (the caller wakes the deliverers)."""
    usage = outcome.usage
    seq = (
        conn.execute(
            turns.update()
            .where(turns.c.id == turn_id)
            .values(
                status=outcome.status.value,
                output_text=outcome.output_text,
                structured_output=outcome.structured_output,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                requests=usage.requests,
                tool_calls=usage.tool_calls,
                credits=usage.credits,
                duration_ms=outcome.duration_ms,
                error=None if outcome.error is None else asdict(outcome.error),
                incomplete_reason=outcome.incomplete_reason,
                model_messages=outcome.model_messages,
                ui_message=outcome.ui_message,
                completed_at=now,
            )
            .returning(turns.c.seq)
        )
    ).scalar_one()
    later_pending = (
        conn.execute(
            sa.select(sa.func.count())
            .select_from(turns)
            .where(
                turns.c.task_key == task_key,
                turns.c.seq > seq,
                turns.c.status.in_(_UNFINISHED),
            )
        )
    ).scalar_one()
    task_values: dict[str, object] = {
        "total_credits": tasks.c.total_credits + usage.credits,
        "total_duration_ms": tasks.c.total_duration_ms + outcome.duration_ms,
    }
    if later_pending:
        task_values["status"] = TaskStatus.PENDING.value
    else:
        task_values.update(status=outcome.status.value, completed_at=now)
    if title:
        task_values["title"] = title
    organization_id, worker_id = conn.execute(
        tasks.update()
        .where(tasks.c.key == task_key)
        .values(**task_values)
        .returning(tasks.c.organization_id, tasks.c.worker_id)
    ).one()
    _record_work(conn, task_key, turn_id, worker_id, outcome, now)
    if usage.credits:
        conn.execute(
            organizations.update()
            .where(
                organizations.c.id == organization_id, organizations.c.credit_balance.is_not(None)
            )
            .values(credit_balance=organizations.c.credit_balance - usage.credits)
        )
    replied = queue_reply(conn, turn_id, [file.path for file in outcome.files], now)
    delivered = not later_pending and queue_delivery(conn, task_key, turn_id, outcome.status, now)
    return delivered or replied


def _record_work(
    conn: sa.Connection,
    task_key: int,
    turn_id: str,
    worker_id: str,
    outcome: TurnOutcome,
    now: datetime,
) -> None:
    """What the turn's tools left: the pages it fetched, the workspace files it changed. Its
    steps are no longer needed: the turn's messages are whole."""
    conn.execute(turn_steps.delete().where(turn_steps.c.turn_id == turn_id))
    record_task_sources(conn, task_key, outcome.sources, now)
    forget_files(conn, worker_id, outcome.deleted_files)
    record_task_files(conn, worker_id, task_key, outcome.files, now)
