"""Tasks and turns: submitting a turn, reading a task's state, listing and archiving."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from kennel.models import (
    AttachedFile,
    Budget,
    StoredTurn,
    Submission,
    SubmissionContext,
    Task,
    TaskSnapshot,
    TaskStatus,
    TaskTotals,
    TriggeredBy,
    Turn,
    TurnError,
    Usage,
    Visibility,
)
from kennel.models.jobs import TURN_JOB
from kennel.storage.database import Database, Dialect
from kennel.storage.files import record_task_files, task_files_of
from kennel.storage.jobs import enqueue, holds_back
from kennel.storage.mail import record_inbound
from kennel.storage.sources import task_sources_of
from kennel.storage.statements import Prebuilt
from kennel.storage.tables import organizations, tasks, turns, workers
from kennel.storage.wakeups import JOBS_TOPIC, task_topic
from kennel.storage.workers import find_worker, insert_worker

# Every turn column but the stored model messages, which only the runner needs.
_TURN_COLUMNS = [column for column in turns.c if column.name != "model_messages"]

# Built once: every task runs them (see `kennel.storage`).
_TASK_KEY = sa.bindparam("task_key", type_=sa.BigInteger)
_CREDIT_BALANCE = Prebuilt(
    sa.select(organizations.c.credit_balance).where(
        organizations.c.id == sa.bindparam("organization_id")
    )
)
_SELECT_TASK_BY_ID = sa.select(tasks).where(
    tasks.c.organization_id == sa.bindparam("organization_id"),
    tasks.c.id == sa.bindparam("task_id"),
)
_TASK_BY_ID = Prebuilt(_SELECT_TASK_BY_ID)
TASK_BY_KEY = Prebuilt(sa.select(tasks).where(tasks.c.key == _TASK_KEY))
_TURN_BY_ID = Prebuilt(sa.select(*_TURN_COLUMNS).where(turns.c.id == sa.bindparam("turn_id")))
_TURNS_OF_TASK = Prebuilt(
    sa.select(*_TURN_COLUMNS).where(turns.c.task_key == _TASK_KEY).order_by(turns.c.seq)
)
_INSERT_TASK = Prebuilt(tasks.insert().returning(tasks.c.key))
_INSERT_TURN = Prebuilt(turns.insert())
_COUNT_TURN = Prebuilt(
    tasks.update()
    .where(tasks.c.key == _TASK_KEY)
    .values(
        turn_count=tasks.c.turn_count + 1,
        status=sa.bindparam("status"),
        completed_at=None,
    )
    .returning(tasks.c.event_seq)
)


class TaskStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def submit(
        self, submission: Submission, now: datetime, accept_existing: Callable[[Task], None]
    ) -> StoredTurn:
        """Store a turn and its job, creating the task (and worker) when new.

        `accept_existing` runs inside the transaction on an already stored task and raises to
        refuse the turn. The job is queued, or stored claimed by the submission's claimant
        when no earlier turn of the task holds it back (the claimant then starts it).
        """

        def work(conn: sa.Connection) -> StoredTurn:
            return submit_turn(self._db, conn, submission, now, accept_existing)

        try:
            return await self._db.write(work)
        except IntegrityError:
            # Two submissions raced to create the same task id: the loser becomes a follow-up.
            return await self._db.write(work)

    async def submission_context(
        self, organization_id: str, task_id: str, worker_id: str | None
    ) -> SubmissionContext:
        def work(conn: sa.Connection) -> SubmissionContext:
            balance = _CREDIT_BALANCE.scalar_one(conn, {"organization_id": organization_id})
            task = _find_task(conn, organization_id, task_id)
            wanted = task.worker_id if task is not None else worker_id
            worker = None if wanted is None else find_worker(conn, organization_id, wanted)
            return SubmissionContext(balance, task, worker)

        return await self._db.glance(work)

    async def get(self, organization_id: str, task_id: str) -> Task | None:
        return await self._db.read(lambda conn: _find_task(conn, organization_id, task_id))

    async def get_turn(self, turn_id: str) -> Turn | None:
        params = {"turn_id": turn_id}
        row = await self._db.glance(lambda conn: _TURN_BY_ID.first(conn, params))
        return None if row is None else turn_from_row(row)

    async def latest_for_worker(self, organization_id: str, worker_id: str) -> Task | None:
        """The worker's most recently created task that is not archived."""
        query = (
            sa.select(tasks)
            .where(
                tasks.c.organization_id == organization_id,
                tasks.c.worker_id == worker_id,
                tasks.c.archived_at.is_(None),
            )
            .order_by(tasks.c.created_at.desc(), tasks.c.key.desc())
            .limit(1)
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else task_from_row(row)

    async def snapshot(self, task_key: int) -> TaskSnapshot:
        def work(conn: sa.Connection) -> TaskSnapshot:
            row = TASK_BY_KEY.one(conn, {"task_key": task_key})
            task_turns = _turns_of(conn, task_key)
            files = task_files_of(conn, task_key)
            sources = task_sources_of(conn, task_key)
            event_seq = int(row.event_seq)
            return TaskSnapshot(task_from_row(row), task_turns, files, event_seq, sources)

        return await self._db.glance(work)

    async def turns_of(self, task_key: int) -> list[Turn]:
        return await self._db.read(lambda conn: _turns_of(conn, task_key))

    async def archive(self, task_key: int, now: datetime) -> None:
        update = (
            tasks.update()
            .where(tasks.c.key == task_key, tasks.c.archived_at.is_(None))
            .values(archived_at=now)
        )
        await self._db.write(lambda conn: conn.execute(update))

    async def list_visible(
        self,
        organization_id: str,
        user_id: str,
        *,
        worker_id: str | None,
        status: TaskStatus | None,
        offset: int,
        limit: int,
        triggered_by: TriggeredBy | None = None,
    ) -> tuple[list[Task], int]:
        """Unarchived tasks of live workers the user may see, newest first, with the total."""
        conditions = [
            tasks.c.organization_id == organization_id,
            tasks.c.archived_at.is_(None),
            workers.c.deleted_at.is_(None),
            sa.or_(workers.c.visibility == Visibility.PUBLIC.value, workers.c.user_id == user_id),
        ]
        if worker_id is not None:
            conditions.append(tasks.c.worker_id == worker_id)
        if status is not None:
            conditions.append(tasks.c.status == status.value)
        if triggered_by is not None:
            conditions.append(tasks.c.triggered_by == triggered_by.value)
        joined = tasks.join(workers, workers.c.id == tasks.c.worker_id)

        def work(conn: sa.Connection) -> tuple[list[Task], int]:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(joined).where(*conditions)
            ).scalar_one()
            rows = conn.execute(
                sa.select(tasks)
                .select_from(joined)
                .where(*conditions)
                .order_by(tasks.c.created_at.desc(), tasks.c.key.desc())
                .offset(offset)
                .limit(limit)
            )
            return [task_from_row(row) for row in rows], int(total)

        return await self._db.read(work)


def submit_turn(
    db: Database,
    conn: sa.Connection,
    submission: Submission,
    now: datetime,
    accept_existing: Callable[[Task], None],
) -> StoredTurn:
    """Store a turn and its job inside `conn`'s transaction (see `TaskStore.submit`)."""
    # Lock the task row: concurrent follow-ups must take consecutive turn numbers, and the
    # check that no earlier turn holds this one back sees every earlier submission.
    task = _find_task(conn, submission.organization_id, submission.task_id, dialect=db.dialect)
    if task is None:
        if submission.create_worker:
            insert_worker(conn, submission.worker)
        task = _insert_task(conn, submission, now)
    else:
        accept_existing(task)
    lock_key = f"task:{task.key}"
    claimant = submission.claimant
    if claimant is not None and task.totals.turn_count and holds_back(conn, lock_key):
        claimant = None  # an earlier turn of the task is queued or running: this one waits
    started = claimant is not None
    turn = Turn(
        id=submission.turn_id,
        task_key=task.key,
        seq=task.totals.turn_count,
        input=submission.input,
        budget=submission.budget,
        status=TaskStatus.RUNNING if started else TaskStatus.PENDING,
        output_text="",
        structured_output=None,
        usage=Usage(),
        duration_ms=0,
        created_at=now,
        started_at=now if started else None,
        completed_at=None,
        error=None,
        incomplete_reason=None,
        first_event_seq=None,
        ui_message=None,
        attempts=1 if started else 0,
        live=submission.live,
        attachments=tuple(
            AttachedFile(file.path, file.media_type, file.size) for file in submission.files
        ),
    )
    _INSERT_TURN.run(
        conn,
        {
            "id": turn.id,
            "task_key": task.key,
            "seq": turn.seq,
            "input": turn.input,
            "budget": turn.budget.value,
            "status": turn.status.value,
            "live": turn.live,
            "attachments": _attachments_json(turn.attachments),
            "created_at": now,
            "started_at": turn.started_at,
            "attempts": turn.attempts,
        },
    )
    running = started or task.status is TaskStatus.RUNNING
    status = TaskStatus.RUNNING if running else TaskStatus.PENDING
    event_seq = _COUNT_TURN.scalar_one(conn, {"task_key": task.key, "status": status.value})
    job = enqueue(
        conn,
        TURN_JOB,
        turn.id,
        now,
        max_attempts=submission.max_attempts,
        lock_key=lock_key,
        claimant=claimant,
    )
    record_task_files(conn, task.worker_id, task.key, submission.files, now)
    if submission.email is not None:
        record_inbound(conn, task.worker_id, task.key, turn.id, submission.email, now)
    # A turn its claimant starts needs no runner woken; followers of the task, always.
    db.publish(conn, *(() if started else (JOBS_TOPIC,)), task_topic(task.key))
    return StoredTurn(task, turn, int(event_seq), job)


def _turns_of(conn: sa.Connection, task_key: int) -> list[Turn]:
    rows = _TURNS_OF_TASK.rows(conn, {"task_key": task_key})
    return [turn_from_row(row) for row in rows]


def _find_task(
    conn: sa.Connection, organization_id: str, task_id: str, *, dialect: Dialect | None = None
) -> Task | None:
    query = _TASK_BY_ID if dialect is None else _locked_task_by_id(dialect.locking)
    row = query.first(conn, {"organization_id": organization_id, "task_id": task_id})
    return None if row is None else task_from_row(row)


@functools.lru_cache(maxsize=4)
def _locked_task_by_id(locking: Callable[[sa.Select[Any]], sa.Select[Any]]) -> Prebuilt:
    """`_TASK_BY_ID` holding its row until the submission commits, built once per dialect."""
    return Prebuilt(locking(_SELECT_TASK_BY_ID))


def _insert_task(conn: sa.Connection, submission: Submission, now: datetime) -> Task:
    key = _INSERT_TASK.scalar_one(
        conn,
        {
            "id": submission.task_id,
            "organization_id": submission.organization_id,
            "worker_id": submission.worker.id,
            "title": submission.provisional_title,
            "status": TaskStatus.PENDING.value,
            "triggered_by": submission.triggered_by.value,
            "created_by_user_id": submission.created_by_user_id,
            "metadata": submission.metadata,
            "created_at": now,
        },
    )
    return Task(
        key=int(key),
        id=submission.task_id,
        organization_id=submission.organization_id,
        worker_id=submission.worker.id,
        title=submission.provisional_title,
        status=TaskStatus.PENDING,
        triggered_by=submission.triggered_by,
        created_by_user_id=submission.created_by_user_id,
        created_at=now,
        completed_at=None,
        archived_at=None,
        metadata=submission.metadata,
    )


def task_from_row(row: Any) -> Task:
    return Task(
        key=row.key,
        id=row.id,
        organization_id=row.organization_id,
        worker_id=row.worker_id,
        title=row.title,
        status=TaskStatus(row.status),
        triggered_by=TriggeredBy(row.triggered_by),
        created_by_user_id=row.created_by_user_id,
        created_at=row.created_at,
        completed_at=row.completed_at,
        archived_at=row.archived_at,
        metadata=row.metadata,
        totals=TaskTotals(row.total_credits, row.total_duration_ms, row.turn_count),
    )


def turn_from_row(row: Any) -> Turn:
    return Turn(
        id=row.id,
        task_key=row.task_key,
        seq=row.seq,
        input=row.input,
        budget=Budget(row.budget),
        status=TaskStatus(row.status),
        output_text=row.output_text,
        structured_output=row.structured_output,
        usage=Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            requests=row.requests,
            tool_calls=row.tool_calls,
            credits=row.credits,
        ),
        duration_ms=row.duration_ms,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        error=None if row.error is None else TurnError(**row.error),
        incomplete_reason=row.incomplete_reason,
        first_event_seq=row.first_event_seq,
        ui_message=row.ui_message,
        attempts=row.attempts,
        live=row.live,
        attachments=tuple(
            AttachedFile(item["path"], item["mediaType"], item["size"])
            for item in row.attachments or ()
        ),
    )


def _attachments_json(files: tuple[AttachedFile, ...]) -> list[dict[str, Any]] | None:
    if not files:
        return None
    return [{"path": f.path, "mediaType": f.media_type, "size": f.size} for f in files]
