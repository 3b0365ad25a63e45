"""The organization page: credits per day per worker, the balance, the members, and the
signed-in user's API keys (create one, shown once; revoke one)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from kennel.dashboard.charts import credits_chart
from kennel.dashboard.deps import DashboardDep, PostedDep, SessionDep
from kennel.dashboard.render import page
from kennel.dashboard.routing import DashboardRoute
from kennel.services.usage import DEFAULT_DAYS

router = APIRouter(route_class=DashboardRoute)


@router.get("/organization")
async def organization_page(request: Request, session: SessionDep, app: DashboardDep) -> Response:
    principal = session.principal
    since = app.usage.default_since()
    usage = await app.usage.daily_for(principal, since)
    return page(
        request,
        "organization.html",
        title="Organization",
        organization=await app.organizations.get(principal.organization_id),
        members=await app.organizations.members(principal.organization_id),
        keys=await app.keys.list_for(principal),
        chart=credits_chart(usage, since, since + timedelta(days=DEFAULT_DAYS - 1)),
        current_key=principal.key_id,
    )


@router.post("/organization/keys")
async def create_key(request: Request, posted: PostedDep, app: DashboardDep) -> Response:
    """A new key for the signed-in user, shown on this answer only (it is stored hashed)."""
    created = await app.auth.create_key_for(posted.principal)
    return page(
        request,
        "key_created.html",
        headers={"Cache-Control": "no-store"},
        title="New API key",
        created=created,
    )


@router.post("/organization/keys/{key_id}/revoke")
async def revoke_key(key_id: str, posted: PostedDep, app: DashboardDep) -> Response:
    """Revoking the key this session signed in with ends the session too."""
    await app.keys.revoke_own(posted.principal, key_id)
    return RedirectResponse("/organization#keys", status_code=303)
