"""A turn's own rows as its job moves: started when claimed, waiting again when handed back,
and how it ended (with its task's totals, its bill, and the deliveries its end queues)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

import sqlalchemy as sa

from kennel.models import TaskStatus, TurnOutcome
from kennel.models.jobs import DeliveryAttempts
from kennel.storage.billing import debit
from kennel.storage.files import forget_files, record_task_files
from kennel.storage.mail import queue_reply
from kennel.storage.sources import record_task_sources
from kennel.storage.statements import Prebuilt, new_values, one_of, setting
from kennel.storage.tables import EpochMillis, tasks, turn_steps, turns
from kennel.storage.webhooks import queue_delivery

UNFINISHED = (TaskStatus.PENDING.value, TaskStatus.RUNNING.value)


# Statements of every turn's start and end, built once (see `kennel.storage`).
_TURN_ID: sa.BindParameter[str] = sa.bindparam("turn_id")
_START_TURN = Prebuilt(
    turns.update()
    .where(turns.c.id == _TURN_ID)
    .values(
        status=TaskStatus.RUNNING.value,
        started_at=sa.func.coalesce(turns.c.started_at, sa.bindparam("now", type_=EpochMillis)),
        attempts=turns.c.attempts + 1,
    )
)
_START_TASK = Prebuilt(
    tasks.update()
    .where(
        tasks.c.key == sa.select(turns.c.task_key).where(turns.c.id == _TURN_ID).scalar_subquery()
    )
    .values(status=TaskStatus.RUNNING.value)
)
_OUTCOME = Prebuilt(
    turns.update()
    .where(turns.c.id == sa.bindparam("turn_id"))
    .values(
        setting(
            (
                "status",
                "output_text",
                "structured_output",
                "input_tokens",
                "output_tokens",
                "requests",
                "tool_calls",
                "credits",
                "duration_ms",
                "error",
                "incomplete_reason",
                "model_messages",
                "ui_message",
                "completed_at",
            )
        )
    )
    .returning(turns.c.seq)
)
_LATER_PENDING = Prebuilt(
    sa.select(sa.func.count())
    .select_from(turns)
    .where(
        turns.c.task_key == sa.bindparam("task_key"),
        turns.c.seq > sa.bindparam("seq"),
        one_of(turns.c.status, UNFINISHED),
    )
)
_FORGET_STEPS = Prebuilt(turn_steps.delete().where(turn_steps.c.turn_id == sa.bindparam("turn_id")))


@functools.cache
def _task_totals(ended: bool, titled: bool) -> Prebuilt:
    """The task's update at a turn's end: its totals, its status (and end, when no later turn
    waits), its title (when the model wrote one)."""
    values: dict[str, object] = {
        "total_credits": tasks.c.total_credits + sa.bindparam("credits", type_=sa.BigInteger),
        "total_duration_ms": tasks.c.total_duration_ms
        + sa.bindparam("duration_ms", type_=sa.BigInteger),
        **setting(("status",)),
    }
    if ended:
        values.update(setting(("completed_at",)))
    if titled:
        values.update(setting(("title",)))
    return Prebuilt(
        tasks.update()
        .where(tasks.c.key == sa.bindparam("task_key"))
        .values(values)
        .returning(tasks.c.organization_id, tasks.c.worker_id)
    )


def start_turns(conn: sa.Connection, turn_ids: Sequence[str], now: datetime) -> None:
    """Turn jobs were claimed: their turns and tasks are running."""
    _START_TURN.run_many(conn, [{"turn_id": turn_id, "now": now} for turn_id in turn_ids])
    _START_TASK.run_many(conn, [{"turn_id": turn_id} for turn_id in turn_ids])


def return_turns(conn: sa.Connection, turn_ids: Sequence[str], spent: bool) -> None:
    """Turn jobs went back to the queue: their turns wait again; an attempt that was not the
    turn's own failure (an interruption, a clean shutdown) is not counted."""
    attempts = turns.c.attempts if spent else turns.c.attempts - 1
    conn.execute(
        turns.update()
        .where(turns.c.id.in_(turn_ids))
        .values(status=TaskStatus.PENDING.value, attempts=attempts)
    )


def record_outcome(
    conn: sa.Connection,
    attempts: DeliveryAttempts,
    turn_id: str,
    task_key: int,
    outcome: TurnOutcome,
    now: datetime,
    *,
    title: str | None = None,
) -> bool:
    """Record how a turn ended, on the turn and its task; bill it; queue its webhook delivery
    (when the task ended with it) and its e-mail reply (when a mail asked for it). True when it
    left work for a runner: a later turn of the task was waiting for this one to end, or a
    delivery or a reply was queued (the caller then publishes `JOBS_TOPIC`)."""
    usage = outcome.usage
    ended = {
        "status": outcome.status.value,
        "output_text": outcome.output_text,
        "structured_output": outcome.structured_output,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "requests": usage.requests,
        "tool_calls": usage.tool_calls,
        "credits": usage.credits,
        "duration_ms": outcome.duration_ms,
        "error": None if outcome.error is None else asdict(outcome.error),
        "incomplete_reason": outcome.incomplete_reason,
        "model_messages": outcome.model_messages,
        "ui_message": outcome.ui_message,
        "completed_at": now,
    }
    seq = _OUTCOME.scalar_one(conn, {"turn_id": turn_id, **new_values(ended)})
    later_pending = _LATER_PENDING.scalar_one(conn, {"task_key": task_key, "seq": seq})
    status = TaskStatus.PENDING if later_pending else outcome.status
    organization_id, worker_id = _task_totals(not later_pending, bool(title)).one(
        conn,
        {
            "task_key": task_key,
            "credits": usage.credits,
            "duration_ms": outcome.duration_ms,
            **new_values({"status": status.value, "completed_at": now, "title": title}),
        },
    )
    record_work(conn, task_key, turn_id, worker_id, outcome, now)
    debit(conn, organization_id, usage.credits)
    replying = queue_reply(conn, turn_id, [file.path for file in outcome.files], now, attempts.mail)
    if later_pending:
        return True
    delivering = queue_delivery(conn, task_key, turn_id, outcome.status, now, attempts.webhook)
    return replying or delivering


def record_work(
    conn: sa.Connection,
    task_key: int,
    turn_id: str,
    worker_id: str,
    outcome: TurnOutcome,
    now: datetime,
) -> None:
    """What the turn's tools left: the pages it fetched, the workspace files it changed. Its
    steps are no longer needed: the turn's messages are whole."""
    _FORGET_STEPS.run(conn, {"turn_id": turn_id})
    record_task_sources(conn, task_key, outcome.sources, now)
    forget_files(conn, worker_id, outcome.deleted_files)
    record_task_files(conn, worker_id, task_key, outcome.files, now)
