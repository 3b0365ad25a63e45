"""What handlers get from the app: the services and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from kennel.api.wire import Wire
from kennel.config import Settings
from kennel.models import Principal
from kennel.services.auth import AuthService
from kennel.services.keys import KeyService
from kennel.services.organizations import OrganizationService
from kennel.services.ratelimit import RateLimiter
from kennel.services.schedules import ScheduleService
from kennel.services.sessions import SessionService
from kennel.services.tasks import TaskService
from kennel.services.usage import UsageService
from kennel.services.webhooks import WebhookService
from kennel.services.workers import WorkerService


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the API uses, wired once by `kennel.app` and kept in `app.state.services`."""

    settings: Settings
    auth: AuthService
    workers: WorkerService
    tasks: TaskService
    limiter: RateLimiter
    wire: Wire
    schedules: ScheduleService
    webhooks: WebhookService
    keys: KeyService
    organizations: OrganizationService
    usage: UsageService
    sessions: SessionService
    """Dashboard sessions: file links (`Worker.files[].url`) also open in a signed-in browser."""


async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def principal(request: Request) -> Principal:
    found: Services = request.app.state.services
    caller = await found.auth.authenticate(request.headers.get("authorization"))
    found.limiter.check(caller.key_id)
    return caller


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
