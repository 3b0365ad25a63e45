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
from kennel.storage.mail import INBOUND, queue_reply
from kennel.storage.sources import record_task_sources
from kennel.storage.statements import Prebuilt, new_values, one_of, setting
from kennel.storage.tables import EpochMillis, email_messages, tasks, turn_steps, turns, webhooks
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
_later = turns.alias("later")
_this = turns.alias("this")
_owner = tasks.alias("owner")
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
    .returning(
        # Read by the same round trip (about nine statements end a turn; on PostgreSQL each is
        # one): how many later turns of the task wait for this one, and whether a mail asked
        # for it. SQLAlchemy writes SQLite's RETURNING columns without their tables, subqueries
        # included, so these name no column of the updated row: the same values come as
        # parameters, and each unqualified name belongs to its own subquery's table.
        sa.select(sa.func.count())
        .select_from(_later)
        .where(
            # Not `task_key`: an UPDATE takes a parameter named after a column as its new value.
            _later.c.task_key == sa.bindparam("of_task", type_=sa.BigInteger),
            _later.c.seq > sa.select(_this.c.seq).where(_this.c.id == _TURN_ID).scalar_subquery(),
            one_of(_later.c.status, UNFINISHED),
        )
        .scalar_subquery()
        .label("later_pending"),
        sa.exists()
        .where(email_messages.c.turn_id == _TURN_ID, email_messages.c.direction == INBOUND)
        .label("asked_by_mail"),
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
        .returning(
            tasks.c.organization_id,
            tasks.c.worker_id,
            # Without a column of the updated row (see `_OUTCOME`).
            sa.exists()
            .where(
                webhooks.c.worker_id.in_(
                    sa.select(_owner.c.worker_id).where(
                        _owner.c.key == sa.bindparam("task_key", type_=sa.BigInteger)
                    )
                )
            )
            .label("has_webhook"),
        )
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
    later_pending, asked_by_mail = _OUTCOME.one(
        conn, {"turn_id": turn_id, "of_task": task_key, **new_values(ended)}
    )
    status = TaskStatus.PENDING if later_pending else outcome.status
    organization_id, worker_id, has_webhook = _task_totals(not later_pending, bool(title)).one(
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
    files = [file.path for file in outcome.files]
    replying = bool(asked_by_mail) and queue_reply(conn, turn_id, files, now, attempts.mail)
    if later_pending:
        return True
    delivering = bool(has_webhook) and queue_delivery(
        conn, task_key, turn_id, outcome.status, now, attempts.webhook
    )
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
