"""The worker's webhook (its creator's alone) and its e-mail allow-list."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from kennel.dashboard.deps import DashboardDep, PostedDep
from kennel.dashboard.render import page
from kennel.dashboard.routing import DashboardRoute
from kennel.models import Worker
from kennel.models.webhooks import Webhook

router = APIRouter(route_class=DashboardRoute)


@router.post("/worker/{worker_id}/webhook")
async def set_webhook(
    worker_id: str, request: Request, posted: PostedDep, app: DashboardDep
) -> Response:
    """A first URL makes a token, shown on the answer page only; a new URL keeps it."""
    before = await app.webhooks.get(posted.principal, worker_id)
    webhook = await app.webhooks.set_url(posted.principal, worker_id, posted.text("url").strip())
    if webhook is None or (before is not None and before.token == webhook.token):
        return RedirectResponse(f"/worker/{worker_id}#webhook", status_code=303)
    worker = await app.workers.visible(posted.principal, worker_id)
    return _token_page(request, worker, webhook)


@router.post("/worker/{worker_id}/webhook/token")
async def regenerate_token(
    worker_id: str, request: Request, posted: PostedDep, app: DashboardDep
) -> Response:
    webhook = await app.webhooks.regenerate_token(posted.principal, worker_id)
    worker = await app.workers.visible(posted.principal, worker_id)
    return _token_page(request, worker, webhook)


@router.post("/worker/{worker_id}/webhook/delete")
async def delete_webhook(worker_id: str, posted: PostedDep, app: DashboardDep) -> Response:
    await app.webhooks.clear(posted.principal, worker_id)
    return RedirectResponse(f"/worker/{worker_id}#webhook", status_code=303)


@router.post("/worker/{worker_id}/email")
async def set_allow_list(worker_id: str, posted: PostedDep, app: DashboardDep) -> Response:
    entries = [line.strip() for line in posted.text("allow_list").splitlines() if line.strip()]
    await app.workers.update(posted.principal, worker_id, {"email_allow_list": entries})
    return RedirectResponse(f"/worker/{worker_id}#email", status_code=303)


def _token_page(request: Request, worker: Worker, webhook: Webhook) -> Response:
    # Never cached or kept in history: the page holds a secret.
    headers = {"Cache-Control": "no-store"}
    return page(
        request,
        "webhook_token.html",
        headers=headers,
        title="Webhook token",
        worker=worker,
        webhook=webhook,
    )
