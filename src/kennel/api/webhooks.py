"""Webhook configuration routes (spec §3.9): URL, token and the delivery log of a worker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from kennel.api.bodies import read_json
from kennel.api.deps import PrincipalDep, ServicesDep
from kennel.api.openapi import COMMON_ERRORS, errors, json_body
from kennel.api.schemas import PageNumber
from kennel.clock import iso
from kennel.models import Page
from kennel.models.webhooks import Webhook, WebhookExecution

router = APIRouter(prefix="/api/workers/{worker_id}/webhook", responses=COMMON_ERRORS)

JSON = dict[str, Any]
PAGE_SIZE = 50


class UpdateWebhookBody(BaseModel):
    """`url` is required but may be null, which clears the webhook (spec §3.9, §14.4)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str | None


def webhook_wire(webhook: Webhook | None) -> JSON:
    """A `Webhook` (spec §4.7): both fields null when none is configured."""
    if webhook is None:
        return {"token": None, "url": None}
    return {"token": webhook.token, "url": webhook.url}


def execution_wire(execution: WebhookExecution) -> JSON:
    """A `WebhookExecution` (spec §4.8)."""
    return {
        "id": execution.id,
        "createdAt": iso(execution.created_at),
        "durationMs": execution.duration_ms,
        "errorMessage": execution.error_message,
        "requestStatus": execution.request_status.value,
        "responseStatus": execution.response_status,
        "taskId": execution.task_id,
        "taskTitle": execution.task_title,
        "url": execution.url,
        "workerId": execution.worker_id,
    }


def executions_wire(page: Page[WebhookExecution]) -> JSON:
    """A `WebhookExecutionList`: like our other pages, but the items are under `logs`."""
    return {
        "logs": [execution_wire(execution) for execution in page.items],
        "page": page.page,
        "pageCount": page.page_count,
        "totalCount": page.total_count,
    }


@router.get("", responses=errors(403, 404))
async def get_webhook(worker_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    return JSONResponse(webhook_wire(await app.webhooks.get(caller, worker_id)))


@router.put(
    "",
    openapi_extra=json_body(UpdateWebhookBody, required=True),
    responses=errors(403, 404, 413),
)
async def update_webhook(
    worker_id: str, request: Request, caller: PrincipalDep, app: ServicesDep
) -> JSONResponse:
    body = UpdateWebhookBody.model_validate(await read_json(request, app.settings.max_json_bytes))
    return JSONResponse(webhook_wire(await app.webhooks.set_url(caller, worker_id, body.url)))


@router.delete("", responses=errors(403, 404))
async def delete_webhook(worker_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    """No body is read: the SDK sends `Content-Type: application/json` with none (spec §1.3)."""
    await app.webhooks.clear(caller, worker_id)
    return JSONResponse(webhook_wire(None))


@router.post("/regenerate-token", responses=errors(403, 404))
async def regenerate_token(worker_id: str, caller: PrincipalDep, app: ServicesDep) -> JSONResponse:
    """No body is read (the SDK sends an empty one); 404 when no webhook is configured."""
    return JSONResponse(webhook_wire(await app.webhooks.regenerate_token(caller, worker_id)))


@router.get("/executions", responses=errors(403, 404))
async def list_executions(
    worker_id: str,
    caller: PrincipalDep,
    app: ServicesDep,
    page: PageNumber = 1,
) -> JSONResponse:
    found = await app.webhooks.executions(caller, worker_id, page, PAGE_SIZE)
    return JSONResponse(executions_wire(found))
