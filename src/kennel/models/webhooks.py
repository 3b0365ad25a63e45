"""Records of webhooks: a worker's webhook, a delivery as one attempt sees it, the log of
attempts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Webhook:
    """A configured webhook: a worker has one, or none (no row)."""

    worker_id: str
    url: str
    token: str
    updated_at: datetime


class DeliveryStatus(StrEnum):
    """`requestStatus` of an execution: `success` iff the endpoint answered 2xx (spec §4.8)."""

    SUCCESS = "success"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A task's end on its way to its worker's webhook, as one attempt of its job sees it:
    retried with backoff until the receiver answers 2xx or the attempts run out."""

    id: str
    """Also the Standard Webhooks `webhook-id`: the same for every attempt."""
    worker_id: str
    organization_id: str
    task_key: int
    task_id: str
    task_title: str | None
    turn_id: str
    event_type: str
    created_at: datetime
    body: str | None
    """The JSON sent, fixed at the first attempt so retries send the same message."""
    attempt: int
    """This attempt's number, from 1."""
    url: str
    """Where the worker's webhook points now, and its current token."""
    token: str


@dataclass(frozen=True, slots=True)
class WebhookExecution:
    """One delivery attempt to a worker's webhook."""

    id: str
    worker_id: str
    organization_id: str
    url: str
    request_status: DeliveryStatus
    response_status: int | None
    error_message: str | None
    duration_ms: int
    created_at: datetime
    task_key: int | None = None
    task_id: str | None = None
    task_title: str | None = None
