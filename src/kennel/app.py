"""Composition root: builds every part from the settings and wires them together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from kennel import __version__
from kennel.agent.engines import Engines
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime
from kennel.api import errors, openapi, schedules, tasks, webhooks, workers
from kennel.api.access import AccessLog
from kennel.api.boundary import RequestGuard
from kennel.api.deps import Services
from kennel.api.wire import Wire
from kennel.clock import Clock, SystemClock
from kennel.config import Settings
from kennel.dashboard import site
from kennel.dashboard.deps import Dashboard
from kennel.files.workspace import Workspaces
from kennel.models import JSONObject
from kennel.runner.loops import DueLoop
from kennel.runner.runner import Runner
from kennel.services.auth import AuthService
from kennel.services.deliveries import WebhookDeliverer
from kennel.services.jobs import Handler, Jobs
from kennel.services.keys import KeyService
from kennel.services.mail import MailService
from kennel.services.mailer import Mailer
from kennel.services.organizations import OrganizationService
from kennel.services.ratelimit import RateLimiter
from kennel.services.schedules import ScheduleService
from kennel.services.sessions import SessionService, load_or_create_secret
from kennel.services.tasks import TaskService, WorkerState
from kennel.services.turns import TurnService
from kennel.services.usage import UsageService
from kennel.services.webhooks import WebhookService
from kennel.services.workers import WorkerService
from kennel.storage import SCHEDULES_TOPIC, ProcessLock, Store

if TYPE_CHECKING:
    from kennel.mail.smtp import SmtpGateway

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Kennel:
    """Every long-lived part of one Kennel process."""

    settings: Settings
    store: Store
    catalog: ModelCatalog
    services: Services
    dashboard: Dashboard
    turns: TurnService
    runner: Runner
    scheduler: DueLoop
    deliverer: WebhookDeliverer
    engines: Engines
    smtp: SmtpGateway | None
    """The SMTP listener, when `KENNEL_SMTP_PORT` is set."""


def build(settings: Settings, clock: Clock | None = None) -> Kennel:
    clock = clock or SystemClock()
    store = Store.for_settings(settings)
    catalog = ModelCatalog(settings)
    engines = Engines.from_settings(settings)
    runtime = AgentRuntime(catalog, model_timeout=settings.model_timeout_seconds, engines=engines)
    workspaces = Workspaces(settings.workspaces_dir, clock)
    worker_service = WorkerService(store, workspaces, catalog, clock, settings, runtime)
    schedule_service = ScheduleService(store, worker_service, clock, settings)
    auth = AuthService(store, clock)
    sessions = SessionService(
        auth,
        load_or_create_secret(settings.data_dir, settings.session_secret),
        settings.session_days * 86_400,
    )
    services = Services(
        settings=settings,
        auth=auth,
        workers=worker_service,
        tasks=TaskService(store, worker_service, workspaces, catalog, clock, settings),
        limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        wire=Wire(settings.base_url),
        schedules=schedule_service,
        webhooks=WebhookService(store, worker_service, clock, settings),
        keys=KeyService(store, clock),
        organizations=OrganizationService(store),
        usage=UsageService(store, clock),
        sessions=sessions,
    )
    dashboard = Dashboard(
        settings=settings,
        auth=services.auth,
        sessions=sessions,
        workers=services.workers,
        tasks=services.tasks,
        schedules=services.schedules,
        webhooks=services.webhooks,
        keys=services.keys,
        organizations=services.organizations,
        usage=services.usage,
    )
    turns = TurnService(store, runtime, catalog, clock, settings, workspaces)
    wire = services.wire

    def task_event(state: WorkerState) -> JSONObject:
        assert state.snapshot is not None  # a delivery's task exists
        return {"task": wire.task(state.snapshot.task), "worker": wire.worker(state)}

    deliverer = WebhookDeliverer(store, services.tasks, task_event, clock, settings)
    handlers: list[Handler[Any]] = [turns, deliverer]
    if settings.smtp_relay is not None:  # without one, mail waits in the queue
        handlers.append(Mailer(store, workspaces, clock, settings, settings.smtp_relay))
    jobs = Jobs(store, clock, handlers)
    runner = Runner(store, jobs, clock, settings, sole_runner=store.database.dialect.sole_process)
    services.tasks.start_turns_on(runner)
    wakeups = store.database.wakeups
    scheduler = DueLoop("firing schedules", schedule_service.tick, wakeups, SCHEDULES_TOPIC)
    smtp = None
    if settings.smtp_port is not None:
        # Imported only here: the listener's libraries (aiosmtpd, the mail parsers) stay out of
        # a server that receives no mail.
        from kennel.mail.smtp import SmtpGateway

        smtp = SmtpGateway(MailService(store, services.tasks, clock, settings), settings)
    return Kennel(
        settings,
        store,
        catalog,
        services,
        dashboard,
        turns,
        runner,
        scheduler,
        deliverer,
        engines,
        smtp,
    )


@asynccontextmanager
async def running(kennel: Kennel, *, with_runner: bool = True) -> AsyncIterator[Kennel]:
    """Migrated database, wake-ups and (by default) the background work: the runner (turns,
    webhook deliveries and mail, all jobs of one queue), the schedule firing loop and the SMTP
    listener, for as long as the block lasts."""
    lock = ProcessLock.for_database(kennel.store.database)
    try:
        await kennel.store.migrate()
        await kennel.store.database.start_listening()
        async with asyncio.TaskGroup() as group:
            if with_runner:
                group.create_task(kennel.runner.run())
                group.create_task(kennel.scheduler.run())
                if kennel.smtp is not None:
                    _warn_without_relay(kennel.settings)
                    await kennel.smtp.start()
                # Requests are served once the runner takes work, so that the first ones start
                # their turns at once instead of waiting in the queue for its first claim.
                await kennel.runner.ready()
            try:
                yield kennel
            finally:
                if kennel.smtp is not None:
                    await kennel.smtp.stop()
                kennel.runner.stop()
                kennel.scheduler.stop()
    finally:
        await kennel.deliverer.aclose()
        await kennel.engines.aclose()
        await kennel.catalog.aclose()
        await kennel.store.close()
        lock.release()


def _warn_without_relay(settings: Settings) -> None:
    if settings.smtp_relay is None:
        logger.warning(
            "e-mail: KENNEL_SMTP_RELAY_URL is not set, so answers to mail can't be sent; "
            "they wait in the queue until a relay is configured"
        )


def create_app(kennel: Kennel, *, with_runner: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with running(kennel, with_runner=with_runner):
            yield

    app = FastAPI(
        title="Kennel",
        version=__version__,
        description="A self-hosted server for AI workers, speaking the Handinger Workers API.",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.services = kennel.services
    errors.install(app)
    openapi.install(app)
    # Added first, so it runs inside CORS: its own answers (500s too) get CORS headers.
    app.add_middleware(RequestGuard)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Task-Id", "X-Turn-Id", "Retry-After"],
    )
    if kennel.settings.access_log:
        app.add_middleware(AccessLog)  # added last: outermost, so it times the whole response
    app.include_router(workers.router)
    app.include_router(tasks.router)
    app.include_router(schedules.router)
    app.include_router(webhooks.router)
    site.install(app, kennel.dashboard)
    return app
