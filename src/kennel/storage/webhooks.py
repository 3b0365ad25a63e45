"""Webhooks: each worker's delivery URL and shared token, and the log of delivery attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from kennel.models import DeliveryStatus, Webhook, WebhookExecution
from kennel.storage.database import Database
from kennel.storage.tables import webhook_executions, webhooks


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

    async def clear(self, worker_id: str) -> None:
        """Forget the URL and the token: nothing is delivered any more."""

        def work(conn: sa.Connection) -> None:
            conn.execute(webhooks.delete().where(webhooks.c.worker_id == worker_id))

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

        def work(conn: sa.Connection) -> None:
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
