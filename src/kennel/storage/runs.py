"""A turn's run: its context, its events and steps, how it ends or is cancelled.

Every write of a run is fenced by its job's lease token (see `jobs.fence`): once the lease is
lost (expired and taken over, or the turn cancelled), the old run's writes raise
`LeaseLostError` and change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from kennel.errors import NotFoundError
from kennel.models import CANCELLED, CancelledTurns, TaskStatus, TurnContext, TurnOutcome, TurnStep
from kennel.models.jobs import TURN_JOB, DeliveryAttempts, Job, TurnJob
from kennel.storage.database import Database
from kennel.storage.events import append_events
from kennel.storage.jobs import (
    DONE,
    FAILED,
    NO_LEASE,
    QUEUED,
    RUNNING,
    cancel_queued,
    fence,
    settle,
    take_away,
)
from kennel.storage.statements import Prebuilt
from kennel.storage.tables import (
    jobs,
    task_events,
    turn_steps,
    turns,
    workers,
)
from kennel.storage.tasks import TASK_BY_KEY, task_from_row, turn_from_row
from kennel.storage.turns import UNFINISHED, record_outcome
from kennel.storage.wakeups import (
    JOBS_TOPIC,
    cancel_topic,
    task_topic,
    turn_topic,
)
from kennel.storage.workers import worker_from_row

# What every run reads and writes, built once (see `kennel.storage`).
_TURN = Prebuilt(sa.select(turns).where(turns.c.id == sa.bindparam("turn_id")))
_WORKER = Prebuilt(sa.select(workers).where(workers.c.id == sa.bindparam("worker_id")))
_HISTORY = Prebuilt(
    sa.select(turns.c.model_messages)
    .where(
        turns.c.task_key == sa.bindparam("task_key"),
        turns.c.seq < sa.bindparam("seq"),
        turns.c.status == TaskStatus.COMPLETED.value,
        turns.c.model_messages.is_not(None),
    )
    .order_by(turns.c.seq)
)
_INSERT_STEP = Prebuilt(turn_steps.insert())


class RunStore:
    def __init__(self, database: Database, attempts: DeliveryAttempts) -> None:
        self._db = database
        self._attempts = attempts

    async def load_context(self, turn_id: str) -> TurnContext:
        """The worker, task, turn and earlier completed turns' model messages of a claimed turn."""

        def work(conn: sa.Connection) -> TurnContext:
            turn_row = _TURN.one(conn, {"turn_id": turn_id})
            task_row = TASK_BY_KEY.one(conn, {"task_key": turn_row.task_key})
            worker_row = _WORKER.first(conn, {"worker_id": task_row.worker_id})
            if worker_row is None:
                raise NotFoundError(f"worker {task_row.worker_id} not found")
            history = _HISTORY.scalars(conn, {"task_key": turn_row.task_key, "seq": turn_row.seq})
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
                history=[bytes(blob) for blob in history],
                steps=steps,
                told=told,
            )

        return await self._db.glance(work)

    async def append_events(
        self, job: TurnJob, bodies: Sequence[str], now: datetime, lease: timedelta
    ) -> int:
        """Append chunks to the task's log (and extend the lease); returns the last sequence."""

        def work(conn: sa.Connection) -> int:
            fence(conn, job.job, lease_expires_at=now + lease)
            self._db.publish(conn, task_topic(job.task_key))
            return append_events(conn, job.task_key, job.turn_id, bodies)

        return await self._db.write(work)

    async def save_step(
        self, job: TurnJob, step: TurnStep, bodies: Sequence[str], now: datetime, lease: timedelta
    ) -> None:
        """Keep a finished step and the chunks told so far, and mark the job as moving."""

        def work(conn: sa.Connection) -> None:
            fence(conn, job.job, lease_expires_at=now + lease, progressed_at=now)
            _INSERT_STEP.run(
                conn,
                {
                    "turn_id": job.turn_id,
                    "step": step.step,
                    "messages": step.messages,
                    "state": step.state,
                    "created_at": now,
                },
            )
            if bodies:
                append_events(conn, job.task_key, job.turn_id, bodies)
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
            append_events(conn, job.task_key, job.turn_id, final_bodies)
            queued_work = record_outcome(
                conn, self._attempts, job.turn_id, job.task_key, outcome, now, title=title
            )
            # A runner claims again by itself when one of its runs ends: only work this end
            # queued, or let through (a later turn of the task), is news to the runners.
            ended = (task_topic(job.task_key), turn_topic(job.turn_id))
            self._db.publish(conn, *ended, *([JOBS_TOPIC] if queued_work else []))

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
            append_events(conn, task_key, job.ref, final_bodies)
            record_outcome(conn, self._attempts, job.ref, task_key, outcome, now)
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
                .where(turns.c.task_key == task_key, turns.c.status.in_(UNFINISHED))
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
                    record_outcome(conn, self._attempts, row.id, task_key, outcome, now)
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
            if not take_away(conn, TURN_JOB, turn_id, now):
                return False
            task_key = conn.execute(
                sa.select(turns.c.task_key).where(turns.c.id == turn_id)
            ).scalar_one()
            append_events(conn, task_key, turn_id, final_bodies)
            record_outcome(conn, self._attempts, turn_id, task_key, outcome, now)
            self._db.publish(conn, JOBS_TOPIC, task_topic(task_key), turn_topic(turn_id))
            return True

        return await self._db.write(work)
