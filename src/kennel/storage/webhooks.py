"""Webhooks: each worker's delivery URL and shared token, the deliveries of task ends (each
one a job of kind `webhook` in the queue), and the log of delivery attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from kennel import ids
from kennel.models import TASK_EVENT_TYPES, TaskStatus
from kennel.models.jobs import WEBHOOK_JOB, Job
from kennel.models.webhooks import DeliveryStatus, Webhook, WebhookDelivery, WebhookExecution
from kennel.storage.database import Database
from kennel.storage.jobs import cancel_queued, conclude, enqueue
from kennel.storage.statements import Prebuilt
from kennel.storage.tables import tasks, webhook_deliveries, webhook_executions, webhooks


class WebhookStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, worker_id: str) -> Webhook | None:
        def work(conn: sa.Connection) -> Webhook | None:
            return _find(conn, worker_id)

        return await self._db.read(work)

    async def set_url(self, worker_id: str, url: str, new_token: str, now: datetime) -> Webhook:
        """Point the webhook at `url`, keeping its token; `new_token` is used only when the
        worker had no webhook yet."""
        try:
            return await self._set_url(worker_id, url, new_token, now)
        except IntegrityError:
            # Two first-time PUTs raced to insert: the loser updates the winner's row.
            return await self._set_url(worker_id, url, new_token, now)

    async def _set_url(self, worker_id: str, url: str, new_token: str, now: datetime) -> Webhook:
        def work(conn: sa.Connection) -> Webhook:
            result = conn.execute(
                webhooks.update()
                .where(webhooks.c.worker_id == worker_id)
                .values(url=url, updated_at=now)
            )
            if result.rowcount == 0:
                conn.execute(
                    webhooks.insert().values(
                        worker_id=worker_id, url=url, token=new_token, updated_at=now
                    )
                )
            found = _find(conn, worker_id)
            assert found is not None
            return found

        return await self._db.write(work)

    async def clear(self, worker_id: str, now: datetime) -> None:
        """Forget the URL and the token: nothing is delivered any more, not even the events
        still waiting for an attempt."""

        def work(conn: sa.Connection) -> None:
            conn.execute(webhooks.delete().where(webhooks.c.worker_id == worker_id))
            waiting = sa.select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.worker_id == worker_id
            )
            cancel_queued(conn, WEBHOOK_JOB, waiting, now)

        return await self._db.write(work)

    async def replace_token(self, worker_id: str, token: str, now: datetime) -> Webhook | None:
        """Swap the token of a configured webhook (the old one stops working); None if none."""

        def work(conn: sa.Connection) -> Webhook | None:
            result = conn.execute(
                webhooks.update()
                .where(webhooks.c.worker_id == worker_id)
                .values(token=token, updated_at=now)
            )
            if result.rowcount == 0:
                return None
            return _find(conn, worker_id)

        return await self._db.write(work)

    async def record_execution(self, execution: WebhookExecution) -> None:
        """Append one delivery attempt to the worker's execution log."""
        return await self._db.write(lambda conn: _insert_execution(conn, execution))

    async def delivery(self, job: Job) -> WebhookDelivery | None:
        """The delivery a claimed job works on, with the webhook's URL and token as they are
        now; None if the webhook was removed since."""
        d = webhook_deliveries.c
        query = (
            sa.select(
                webhook_deliveries,
                webhooks.c.url,
                webhooks.c.token,
                tasks.c.id.label("task_id"),
                tasks.c.title,
            )
            .join(webhooks, webhooks.c.worker_id == d.worker_id)
            .join(tasks, tasks.c.key == d.task_key)
            .where(d.id == job.ref)
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else _delivery_from_row(row, job.attempts)

    async def finish_attempt(
        self,
        job: Job,
        execution: WebhookExecution,
        body: str,
        now: datetime,
        retry_at: datetime | None,
    ) -> bool:
        """Log the attempt and settle its job: done, due again at `retry_at`, or failed for
        good. False (and nothing logged) if the claim was lost meanwhile."""

        def work(conn: sa.Connection) -> bool:
            if not conclude(conn, job, now, execution.error_message, retry_at):
                return False
            conn.execute(
                webhook_deliveries.update()
                .where(webhook_deliveries.c.id == job.ref)
                .values(body=body)
            )
            _insert_execution(conn, execution)
            return True

        return await self._db.write(work)

    async def executions(
        self, worker_id: str, *, offset: int, limit: int
    ) -> tuple[list[WebhookExecution], int]:
        """A page of the worker's delivery attempts, newest first, with the total count."""
        of_worker = webhook_executions.c.worker_id == worker_id

        def work(conn: sa.Connection) -> tuple[list[WebhookExecution], int]:
            total = (
                conn.execute(
                    sa.select(sa.func.count()).select_from(webhook_executions).where(of_worker)
                )
            ).scalar_one()
            rows = conn.execute(
                sa.select(webhook_executions)
                .where(of_worker)
                .order_by(webhook_executions.c.created_at.desc(), webhook_executions.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [execution_from_row(row) for row in rows], int(total)

        return await self._db.read(work)


_WEBHOOK_OF_TASK = Prebuilt(  # built once: every task's end looks (see `kennel.storage`)
    sa.select(tasks.c.worker_id, tasks.c.organization_id)
    .join(webhooks, webhooks.c.worker_id == tasks.c.worker_id)
    .where(tasks.c.key == sa.bindparam("task_key"))
)


def queue_delivery(
    conn: sa.Connection,
    task_key: int,
    turn_id: str,
    status: TaskStatus,
    now: datetime,
    max_attempts: int,
) -> bool:
    """Queue the task's end for its worker's webhook, if the worker has one (in the
    transaction that records the end, so it is delivered even if the server dies next)."""
    event_type = TASK_EVENT_TYPES.get(status)
    row = _WEBHOOK_OF_TASK.first(conn, {"task_key": task_key})
    if row is None or event_type is None:
        return False
    delivery_id = ids.new_id("msg")
    conn.execute(
        webhook_deliveries.insert().values(
            id=delivery_id,
            worker_id=row.worker_id,
            organization_id=row.organization_id,
            task_key=task_key,
            turn_id=turn_id,
            event_type=event_type,
            created_at=now,
        )
    )
    enqueue(conn, WEBHOOK_JOB, delivery_id, now, max_attempts=max_attempts)
    return True


def _insert_execution(conn: sa.Connection, execution: WebhookExecution) -> None:
    conn.execute(
        webhook_executions.insert().values(
            id=execution.id,
            worker_id=execution.worker_id,
            organization_id=execution.organization_id,
            task_key=execution.task_key,
            task_id=execution.task_id,
            task_title=execution.task_title,
            url=execution.url,
            request_status=execution.request_status.value,
            response_status=execution.response_status,
            error_message=execution.error_message,
            duration_ms=execution.duration_ms,
            created_at=execution.created_at,
        )
    )


def _delivery_from_row(row: Any, attempt: int) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        worker_id=row.worker_id,
        organization_id=row.organization_id,
        task_key=row.task_key,
        task_id=row.task_id,
        task_title=row.title,
        turn_id=row.turn_id,
        event_type=row.event_type,
        created_at=row.created_at,
        body=row.body,
        attempt=attempt,
        url=row.url,
        token=row.token,
    )


def _find(conn: sa.Connection, worker_id: str) -> Webhook | None:
    row = conn.execute(sa.select(webhooks).where(webhooks.c.worker_id == worker_id)).first()
    if row is None:
        return None
    return Webhook(row.worker_id, row.url, row.token, row.updated_at)


def execution_from_row(row: Any) -> WebhookExecution:
    return WebhookExecution(
        id=row.id,
        worker_id=row.worker_id,
        organization_id=row.organization_id,
        url=row.url,
        request_status=DeliveryStatus(row.request_status),
        response_status=row.response_status,
        error_message=row.error_message,
        duration_ms=row.duration_ms,
        created_at=row.created_at,
        task_key=row.task_key,
        task_id=row.task_id,
        task_title=row.task_title,
    )
