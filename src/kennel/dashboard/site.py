"""Puts the dashboard on the app: its services, pages, static files and security headers."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from kennel.dashboard import (
    files,
    organization,
    schedules,
    signin,
    tasks,
    webhooks,
    worker_page,
    workers,
)
from kennel.dashboard.deps import Dashboard
from kennel.dashboard.headers import SecurityHeaders
from kennel.dashboard.render import HERE


def install(app: FastAPI, dashboard: Dashboard) -> None:
    app.state.dashboard = dashboard
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pages = (signin, workers, worker_page, tasks, files, schedules, webhooks, organization)
    for module in pages:
        app.include_router(module.router, include_in_schema=False)
