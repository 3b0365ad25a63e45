"""Webhooks: where a worker reports finished tasks, its shared token, and the delivery log."""

from __future__ import annotations

import secrets

from kennel.clock import Clock
from kennel.config import Settings
from kennel.errors import InvalidInputError, NotFoundError
from kennel.models import Page, Principal
from kennel.models.webhooks import Webhook, WebhookExecution
from kennel.netpolicy import UnsafeURLError, check_url
from kennel.services.workers import WorkerService
from kennel.storage import Store

TOKEN_PREFIX = "whk_"  # noqa: S105 (a prefix, not a secret)
TOKEN_BYTES = 24
"""Random bytes in a token: 32 url-safe characters after the prefix (192 bits)."""


def new_token() -> str:
    """A fresh shared secret, sent as `X-Handinger-Token` and used as the signing key."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


class WebhookService:
    """Every operation is the worker creator's alone (spec §10)."""

    def __init__(
        self, store: Store, workers: WorkerService, clock: Clock, settings: Settings
    ) -> None:
        self._store = store
        self._workers = workers
        self._clock = clock
        self._settings = settings

    async def get(self, principal: Principal, worker_id: str) -> Webhook | None:
        """The worker's webhook, or None when none is configured."""
        worker = await self._workers.owned(principal, worker_id)
        return await self._store.webhooks.get(worker.id)

    async def set_url(
        self, principal: Principal, worker_id: str, url: str | None
    ) -> Webhook | None:
        """Point the webhook at `url`: the first URL gets a new token, later ones keep it.
        `None` clears the URL and the token, like `clear`."""
        worker = await self._workers.owned(principal, worker_id)
        if url is None:
            await self._store.webhooks.clear(worker.id, self._clock.now())
            return None
        self._check_url(url)
        return await self._store.webhooks.set_url(worker.id, url, new_token(), self._clock.now())

    async def clear(self, principal: Principal, worker_id: str) -> None:
        """Forget URL and token; clearing a worker without a webhook is not an error."""
        worker = await self._workers.owned(principal, worker_id)
        await self._store.webhooks.clear(worker.id, self._clock.now())

    async def regenerate_token(self, principal: Principal, worker_id: str) -> Webhook:
        """A new token for the configured URL; the old token stops working at once."""
        worker = await self._workers.owned(principal, worker_id)
        found = await self._store.webhooks.replace_token(worker.id, new_token(), self._clock.now())
        if found is None:
            raise NotFoundError(f"worker {worker_id} has no webhook configured")
        return found

    async def executions(
        self, principal: Principal, worker_id: str, page: int, page_size: int
    ) -> Page[WebhookExecution]:
        """One page of the delivery log, newest first; there is always at least one page."""
        if page < 1:
            raise InvalidInputError("page must be 1 or more")
        worker = await self._workers.owned(principal, worker_id)
        items, total = await self._store.webhooks.executions(
            worker.id, offset=(page - 1) * page_size, limit=page_size
        )
        return Page.of(items, page=page, page_size=page_size, total=total)

    def _check_url(self, url: str) -> None:
        """The rules of spec §16.14 that hold without a DNS lookup: scheme, length, IP hosts."""
        try:
            check_url(
                url,
                allow_http=self._settings.webhook_allow_http,
                allowed_networks=self._settings.allow_private_networks,
            )
        except UnsafeURLError as error:
            message = f"webhook url: {explain(error, url, self._settings)}"
            raise InvalidInputError(message, code="invalid_webhook_url") from None


def explain(error: UnsafeURLError, url: str, settings: Settings) -> str:
    """A refused webhook URL, with the setting that would accept it where one would."""
    if error.kind == "scheme" and not settings.webhook_allow_http and url.startswith("http://"):
        return f"{error} (http:// URLs are accepted with KENNEL_WEBHOOK_ALLOW_HTTP=true)"
    return str(error)
