"""What dashboard handlers get: the services, the signed-in session, checked form posts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.datastructures import FormData

from kennel.config import Settings
from kennel.errors import AuthenticationError, PermissionDeniedError
from kennel.files.uploads import read_multipart
from kennel.files.workspace import Upload
from kennel.models import Principal, Session
from kennel.services.auth import AuthService
from kennel.services.keys import KeyService
from kennel.services.organizations import OrganizationService
from kennel.services.schedules import ScheduleService
from kennel.services.sessions import COOKIE_NAME, SessionService, is_valid_csrf
from kennel.services.tasks import TaskService
from kennel.services.usage import UsageService
from kennel.services.webhooks import WebhookService
from kennel.services.workers import WorkerService

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The services the dashboard calls (the same ones as the API), wired by `kennel.app`."""

    settings: Settings
    auth: AuthService
    sessions: SessionService
    workers: WorkerService
    tasks: TaskService
    schedules: ScheduleService
    webhooks: WebhookService
    keys: KeyService
    organizations: OrganizationService
    usage: UsageService


class SignInRequiredError(AuthenticationError):
    """A page was asked for without a valid session: the sign-in form answers instead."""


@dataclass(frozen=True, slots=True)
class Posted:
    """A form post that passed the CSRF and Origin checks."""

    session: Session
    fields: dict[str, Any]
    uploads: list[Upload]

    @property
    def principal(self) -> Principal:
        return self.session.principal

    def text(self, name: str, default: str = "") -> str:
        value = self.fields.get(name, default)
        return value if isinstance(value, str) else default


async def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


async def signed_in(request: Request) -> Session:
    app: Dashboard = request.app.state.dashboard
    try:
        session = await app.sessions.session(request.cookies.get(COOKIE_NAME))
    except AuthenticationError as error:
        raise SignInRequiredError(error.message) from None
    request.state.session = session
    return session


def check_origin(request: Request, settings: Settings) -> None:
    """A state-changing request must come from the dashboard's own pages: browsers send
    `Origin` (or at least `Referer`) on every form post, so another site's form is refused."""
    claimed = request.headers.get("origin") or _origin_of(request.headers.get("referer"))
    if claimed is None:
        return  # not a browser: the CSRF token alone decides
    allowed = {_origin_of(settings.base_url), _origin_of(str(request.base_url))}
    if claimed not in allowed:
        raise PermissionDeniedError(
            "this form was sent from another site; open the dashboard and try again",
            code="cross_origin",
        )


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


async def posted(request: Request) -> AsyncIterator[Posted]:
    """The form of a POST, after checking the session, its Origin and its CSRF token; uploads
    stay readable until the handler is done."""
    session = await signed_in(request)
    app: Dashboard = request.app.state.dashboard
    check_origin(request, app.settings)
    async with AsyncExitStack() as uploaded:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            multipart = read_multipart(request, app.settings)
            fields, uploads = await uploaded.enter_async_context(multipart)
        else:
            form: FormData = await request.form(max_files=0, max_fields=1000)
            fields, uploads = {k: v for k, v in form.multi_items() if isinstance(v, str)}, []
        token = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD)
        if not is_valid_csrf(session, token if isinstance(token, str) else None):
            raise PermissionDeniedError(
                "this form has expired or was not sent from the dashboard; reload and try again",
                code="csrf_failed",
            )
        yield Posted(session, fields, uploads)


DashboardDep = Annotated[Dashboard, Depends(dashboard)]
SessionDep = Annotated[Session, Depends(signed_in)]
PostedDep = Annotated[Posted, Depends(posted)]
