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
from datetime import datetime, timedelta

import httpx

from kennel import __version__, ids
from kennel.clock import Clock, iso, seconds_until
from kennel.config import Settings
from kennel.models import DeliveryStatus, JSONObject, WebhookDelivery, WebhookExecution
from kennel.netpolicy import UnsafeURLError, check_url, guarded_client
from kennel.services.backoff import backoff_seconds
from kennel.services.tasks import TaskService, WorkerState
from kennel.services.webhooks import explain
from kennel.storage import Store
from kennel.storage.webhooks import AttemptResult

logger = logging.getLogger(__name__)

BATCH = 50
"""Deliveries claimed at once; their attempts run concurrently."""

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


class WebhookDeliverer:
    """Claims due deliveries and makes one attempt at each; `tick()` is its loop's step."""

    def __init__(
        self,
        store: Store,
        tasks: TaskService,
        render: RenderEvent,
        clock: Clock,
        settings: Settings,
        *,
        owner: str,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._render = render
        self._clock = clock
        self._settings = settings
        self._owner = owner
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._lease = timedelta(seconds=2 * settings.webhook_timeout_seconds + 30)
        self._client: httpx.AsyncClient | None = None

    async def tick(self) -> float | None:
        """Deliver what is due; returns the seconds until the next delivery is (None: none)."""
        while await self.deliver_due() == BATCH:
            pass
        return seconds_until(await self._store.webhooks.next_delivery_due(), self._clock.now())

    async def deliver_due(self) -> int:
        """One attempt at each delivery due now (up to a batch); returns how many were made."""
        claimed = await self._store.webhooks.claim_deliveries(
            self._owner, self._clock.now(), self._lease, BATCH
        )
        await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        body = delivery.body if delivery.body is not None else await self._body_of(delivery)
        if body is None:
            answer = _Answer(None, "the worker was deleted before its event could be sent")
            await self._settle(delivery, "", answer, 0, final=True)
            return
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
        await self._settle(delivery, body, answer, duration_ms, final=answer.refused)

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

    async def _settle(
        self,
        delivery: WebhookDelivery,
        body: str,
        answer: _Answer,
        duration_ms: int,
        *,
        final: bool,
    ) -> None:
        now = self._clock.now()
        succeeded = answer.error is None
        execution = WebhookExecution(
            id=ids.new_id("whe"),
            worker_id=delivery.worker_id,
            organization_id=delivery.organization_id,
            url=delivery.url,
            request_status=DeliveryStatus.SUCCESS if succeeded else DeliveryStatus.ERROR,
            response_status=answer.status,
            error_message=answer.error,
            duration_ms=duration_ms,
            created_at=now,
            task_key=delivery.task_key,
            task_id=delivery.task_id,
            task_title=delivery.task_title,
        )
        retry_at = None
        if not succeeded and not final and delivery.attempt < self._settings.webhook_max_attempts:
            delay = retry_delay(delivery.attempt, self._settings, self._rng)
            retry_at = now + timedelta(seconds=delay)
        if answer.refused:
            # The reason names the host; the URL itself may carry a receiver's secret.
            logger.warning(
                "webhook delivery %s of worker %s: %s",
                delivery.id,
                delivery.worker_id,
                answer.error,
            )
        elif not succeeded:
            logger.info(
                "webhook delivery %s, attempt %d: %s%s",
                delivery.id,
                delivery.attempt,
                answer.error,
                f"; next attempt at {iso(retry_at)}" if retry_at else "; giving up",
            )
        result = AttemptResult(execution, body, retry_at)
        if not await self._store.webhooks.finish_attempt(delivery, result):
            logger.warning("webhook delivery %s: claim lost, attempt not recorded", delivery.id)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = guarded_client(
                self._settings.allow_private_networks,
                timeout=self._settings.webhook_timeout_seconds,
            )
        return self._client
