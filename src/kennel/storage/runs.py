"""A turn's run: its context, its events and steps, how it ends or is cancelled.

Every write of a run is fenced by its job's lease token (see `jobs.fence`): once the lease is
lost (expired and taken over, or the turn cancelled), the old run's writes raise
`LeaseLostError` and change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from kennel.errors import NotFoundError
from kennel.models import (
    CANCELLED,
    TURN_JOB,
    DeliveryAttempts,
    Job,
    TaskStatus,
    TurnContext,
    TurnJob,
    TurnOutcome,
    TurnStep,
)
from kennel.storage.billing import debit
from kennel.storage.database import Database
from kennel.storage.files import forget_files, record_task_files
from kennel.storage.jobs import CANCELLED as JOB_CANCELLED
from kennel.storage.jobs import (
    DONE,
    FAILED,
    NO_LEASE,
    QUEUED,
    RUNNING,
    cancel_queued,
    fence,
    settle,
)
from kennel.storage.mail import queue_reply
from kennel.storage.sources import record_task_sources
from kennel.storage.tables import (
    EpochMillis,
    jobs,
    task_events,
    tasks,
    turn_steps,
    turns,
    workers,
)
from kennel.storage.tasks import task_from_row, turn_from_row
from kennel.storage.wakeups import (
    JOBS_TOPIC,
    cancel_topic,
    task_topic,
    turn_topic,
)
from kennel.storage.webhooks import queue_delivery
from kennel.storage.workers import worker_from_row


class RunStore:
    def __init__(self, database: Database, attempts: DeliveryAttempts) -> None:
        self._db = database
        self._attempts = attempts

    async def load_context(self, turn_id: str) -> TurnContext:
        """The worker, task, turn and earlier completed turns' model messages of a claimed turn."""

        def work(conn: sa.Connection) -> TurnContext:
            turn_row = (conn.execute(sa.select(turns).where(turns.c.id == turn_id))).one()
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
                        .where(turn_steps.c.turn_id == turn_id)
                        .order_by(turn_steps.c.step)
                    )
                ]
                told = list(
                    conn.execute(
                        sa.select(task_events.c.body)
                        .where(
                            task_events.c.task_key == turn_row.task_key,
                            task_events.c.turn_id == turn_id,
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
            fence(conn, job.job, lease_expires_at=now + lease)
            self._db.publish(conn, task_topic(job.task_key))
            return _append(conn, job.task_key, job.turn_id, bodies)

        return await self._db.write(work)

    async def save_step(
        self, job: TurnJob, step: TurnStep, bodies: Sequence[str], now: datetime, lease: timedelta
    ) -> None:
        """Keep a finished step and the chunks told so far, and mark the job as moving."""

        def work(conn: sa.Connection) -> None:
            fence(conn, job.job, lease_expires_at=now + lease, progressed_at=now)
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
            fence(conn, job.job, status=DONE, finished_at=now, **NO_LEASE)
            _append(conn, job.task_key, job.turn_id, final_bodies)
            _record_outcome(
                conn, self._attempts, job.turn_id, job.task_key, outcome, now, title=title
            )
            self._db.publish(conn, JOBS_TOPIC, task_topic(job.task_key), turn_topic(job.turn_id))

        return await self._db.write(work)

    async def fail_turn(
        self, job: Job, outcome: TurnOutcome, final_bodies: Sequence[str], now: datetime
    ) -> bool:
        """Give up on a turn job for good, recording why; False if its claim was lost."""

        def work(conn: sa.Connection) -> bool:
            reason = outcome.error.message if outcome.error else None
            if not settle(conn, job, FAILED, now, reason):
                return False
            task_key = conn.execute(
                sa.select(turns.c.task_key).where(turns.c.id == job.ref)
            ).scalar_one()
            _append(conn, task_key, job.ref, final_bodies)
            _record_outcome(conn, self._attempts, job.ref, task_key, outcome, now)
            self._db.publish(conn, JOBS_TOPIC, task_topic(task_key), turn_topic(job.ref))
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
            running = [row.id for row in rows if row.status == RUNNING]
            queued = [row for row in rows if row.status == QUEUED]
            if running:  # the mark its run finds if it reads the turn after this (see TurnService)
                conn.execute(
                    turns.update()
                    .where(turns.c.id.in_(running))
                    .values(incomplete_reason=CANCELLED)
                )
            cancel_queued(conn, TURN_JOB, [row.id for row in queued], now)
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
                for row in queued:
                    _record_outcome(conn, self._attempts, row.id, task_key, outcome, now)
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
                .where(jobs.c.kind == TURN_JOB, jobs.c.ref == turn_id, jobs.c.status == RUNNING)
            ).first()
            if row is None:
                return False
            conn.execute(
                jobs.update()
                .where(jobs.c.id == row.job_id)
                .values(status=JOB_CANCELLED, finished_at=now, **NO_LEASE)
            )
            _append(conn, row.task_key, turn_id, final_bodies)
            _record_outcome(conn, self._attempts, turn_id, row.task_key, outcome, now)
            self._db.publish(conn, JOBS_TOPIC, task_topic(row.task_key), turn_topic(turn_id))
            return True

        return await self._db.write(work)


@dataclass(frozen=True, slots=True)
class CancelledTurns:
    running: list[str]
    """Turns that were running: their runs were told to stop."""
    aborted: list[str]
    """Turns that had not started: they ended `aborted` at once."""


_UNFINISHED = (TaskStatus.PENDING.value, TaskStatus.RUNNING.value)


def start_turns(conn: sa.Connection, turn_ids: Sequence[str], now: datetime) -> None:
    """Turn jobs were claimed: their turns and tasks are running."""
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
    conn.execute(
        tasks.update()
        .where(tasks.c.key.in_(sa.select(turns.c.task_key).where(turns.c.id.in_(turn_ids))))
        .values(status=TaskStatus.RUNNING.value)
    )


def return_turns(conn: sa.Connection, turn_ids: Sequence[str], spent: bool) -> None:
    """Turn jobs went back to the queue: their turns wait again; an attempt that was not the
    turn's own failure (an interruption, a clean shutdown) is not counted."""
    attempts = turns.c.attempts if spent else turns.c.attempts - 1
    conn.execute(
        turns.update()
        .where(turns.c.id.in_(turn_ids))
        .values(status=TaskStatus.PENDING.value, attempts=attempts)
    )


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
    attempts: DeliveryAttempts,
    turn_id: str,
    task_key: int,
    outcome: TurnOutcome,
    now: datetime,
    *,
    title: str | None = None,
) -> None:
    """Record how a turn ended, on the turn and its task; bill it; queue its webhook delivery
    (when the task ended with it) and its e-mail reply (when a mail asked for it). The caller
    publishes `JOBS_TOPIC`."""
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
    debit(conn, organization_id, usage.credits)
    queue_reply(conn, turn_id, [file.path for file in outcome.files], now, attempts.mail)
    if not later_pending:
        queue_delivery(conn, task_key, turn_id, outcome.status, now, attempts.webhook)


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
