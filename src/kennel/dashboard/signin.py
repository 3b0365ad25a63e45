"""Signing in with an API key, and out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from kennel.dashboard.deps import DashboardDep, PostedDep, check_origin
from kennel.dashboard.routing import DashboardRoute, local_path, sign_in_page
from kennel.errors import AuthenticationError
from kennel.services.sessions import COOKIE_NAME

router = APIRouter(route_class=DashboardRoute)


@router.get("/signin")
async def sign_in_form(request: Request, next: str = "/") -> Response:
    return sign_in_page(request, status_code=200, target=next)


@router.post("/signin")
async def sign_in(request: Request, app: DashboardDep) -> Response:
    """No session exists yet to hold a CSRF token: the Origin check keeps other sites from
    signing a visitor in with their own key."""
    check_origin(request, app.settings)
    form = await request.form(max_files=0, max_fields=10)
    key, target = form.get("key"), form.get("next")
    target = local_path(target if isinstance(target, str) else None)
    try:
        cookie, _ = await app.sessions.sign_in(key if isinstance(key, str) else "")
    except AuthenticationError:
        message = "That API key is not valid (or it was revoked)."
        return sign_in_page(request, message, 401, target)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=app.sessions.max_age_seconds,
        httponly=True,
        samesite="lax",
        secure=app.settings.is_https,
        path="/",
    )
    return response


@router.post("/signout")
async def sign_out(_posted: PostedDep) -> Response:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response
