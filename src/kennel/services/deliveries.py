"""Webhook delivery (spec §16.5): every task end reaches its worker's webhook at least once,
signed, one attempt at a time, each attempt logged as a `WebhookExecution`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx

from kennel import __version__, ids
from kennel.clock import Clock, iso
from kennel.config import Settings
from kennel.models import JSONObject
from kennel.models.jobs import WEBHOOK_JOB, Job
from kennel.models.webhooks import DeliveryStatus, WebhookDelivery, WebhookExecution
from kennel.netpolicy import UnsafeURLError, check_url, guarded_client
from kennel.services.backoff import backoff_seconds
from kennel.services.jobs import Attempt
from kennel.services.tasks import TaskService, WorkerState
from kennel.services.webhooks import explain
from kennel.storage import Store

logger = logging.getLogger(__name__)

RenderEvent = Callable[[WorkerState], JSONObject]
"""The event's `data`: `{"task": Task, "worker": Worker}` as the API shows them."""


def signature_headers(message_id: str, sent_at: datetime, body: str, token: str) -> dict[str, str]:
    """Standard Webhooks signing headers; the HMAC-SHA256 key is the token's UTF-8 bytes."""
    timestamp = str(int(sent_at.timestamp()))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(token.encode(), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def retry_delay(attempt: int, settings: Settings, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (from 1), by `KENNEL_WEBHOOK_*`."""
    first, most = settings.webhook_retry_seconds, settings.webhook_retry_max_seconds
    return backoff_seconds(attempt, first=first, most=most, rng=rng)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int | None
    error: str | None
    refused: bool = False
    """The network policy refused the destination: trying again can't help."""


@dataclass(frozen=True, slots=True)
class _Sent:
    """What an attempt leaves for the execution log."""

    delivery: WebhookDelivery
    body: str
    status: int | None
    duration_ms: int
    refused: bool


class WebhookDeliverer:
    """The `webhook` kind of job: one signed POST of a task's end to its worker's webhook."""

    kind = WEBHOOK_JOB
    cut_short_on_stop = False

    def __init__(
        self,
        store: Store,
        tasks: TaskService,
        render: RenderEvent,
        clock: Clock,
        settings: Settings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._render = render
        self._clock = clock
        self._settings = settings
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._client: httpx.AsyncClient | None = None

    def backoff(self, attempt: int) -> float:
        return retry_delay(attempt, self._settings, self._rng)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def attempt(self, job: Job) -> Attempt[_Sent]:
        delivery = await self._store.webhooks.delivery(job)
        if delivery is None:
            return Attempt(
                error="the webhook was removed before the event could be sent", final=True
            )
        body = delivery.body if delivery.body is not None else await self._body_of(delivery)
        if body is None:
            error = "the worker was deleted before its event could be sent"
            return Attempt(error=error, final=True, record=_Sent(delivery, "", None, 0, False))
        sent_at = self._clock.now()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"Kennel-Webhook/{__version__}",
            "X-Handinger-Token": delivery.token,
            **signature_headers(delivery.id, sent_at, body, delivery.token),
        }
        started = time.monotonic()
        answer = await self._post(delivery.url, body, headers)
        duration_ms = int((time.monotonic() - started) * 1000)
        sent = _Sent(delivery, body, answer.status, duration_ms, answer.refused)
        return Attempt(error=answer.error, final=answer.refused, record=sent)

    async def settle(
        self, job: Job, attempt: Attempt[_Sent], retry_at: datetime | None, now: datetime
    ) -> bool:
        """Log the attempt as a `WebhookExecution` with its job's settling."""
        sent = attempt.record
        if sent is None:  # nothing was sent: there is nothing to log
            return await self._store.jobs.conclude(job, now, attempt.error, None)
        delivery = sent.delivery
        execution = WebhookExecution(
            id=ids.new_id("whe"),
            worker_id=delivery.worker_id,
            organization_id=delivery.organization_id,
            url=delivery.url,
            request_status=DeliveryStatus.ERROR if attempt.error else DeliveryStatus.SUCCESS,
            response_status=sent.status,
            error_message=attempt.error,
            duration_ms=sent.duration_ms,
            created_at=now,
            task_key=delivery.task_key,
            task_id=delivery.task_id,
            task_title=delivery.task_title,
        )
        if sent.refused:
            # The reason names the host; the URL itself may carry a receiver's secret.
            logger.warning(
                "webhook delivery %s of worker %s: %s",
                delivery.id,
                delivery.worker_id,
                attempt.error,
            )
        elif attempt.error:
            logger.info(
                "webhook delivery %s, attempt %d: %s%s",
                delivery.id,
                delivery.attempt,
                attempt.error,
                f"; next attempt at {iso(retry_at)}" if retry_at else "; giving up",
            )
        return await self._store.webhooks.finish_attempt(job, execution, sent.body, now, retry_at)

    async def _body_of(self, delivery: WebhookDelivery) -> str | None:
        worker = await self._store.workers.get(delivery.organization_id, delivery.worker_id)
        if worker is None:
            return None
        state = await self._tasks.state_of_task(worker, delivery.task_key, delivery.turn_id)
        event = {
            "type": delivery.event_type,
            "createdAt": iso(delivery.created_at),
            "data": self._render(state),
        }
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"))

    async def _post(self, url: str, body: str, headers: Mapping[str, str]) -> _Answer:
        settings = self._settings
        try:
            # The URL was checked when it was set; the rules may have changed since.
            check_url(
                url,
                allow_http=settings.webhook_allow_http,
                allowed_networks=settings.allow_private_networks,
            )
            async with (
                asyncio.timeout(settings.webhook_timeout_seconds),
                self._http().stream("POST", url, content=body, headers=headers) as response,
            ):
                status = response.status_code
        except UnsafeURLError as error:
            # The same URL resolves the same way until an operator changes DNS or the
            # allow-list: retrying for a day would only hide the misconfiguration.
            reason = explain(error, url, settings)
            return _Answer(None, f"refused by the network policy, not retried: {reason}", True)
        except (httpx.TimeoutException, TimeoutError):
            return _Answer(None, f"timed out after {settings.webhook_timeout_seconds:g} s")
        except httpx.HTTPError as error:
            return _Answer(None, f"could not connect: {error or type(error).__name__}")
        if 200 <= status < 300:
            return _Answer(status, None)
        return _Answer(status, f"the endpoint answered HTTP {status}")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = guarded_client(
                self._settings.allow_private_networks,
                timeout=self._settings.webhook_timeout_seconds,
            )
        return self._client
