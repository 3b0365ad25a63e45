"""The `kennel` command: serve, manage API keys, migrate."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from kennel.config import Settings
from kennel.errors import KennelError
from kennel.operations import build_operations
from kennel.operators import credits, list_keys, revoke_key, usage
from kennel.services.auth import CreatedKey
from kennel.storage import ProcessLock


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as error:
        raise click.ClickException(f"invalid settings:\n{error}") from None


def _announce_database(settings: Settings) -> None:
    """Every command that opens the database says which one, on stderr: a relative data folder
    is relative to where the command runs, so two folders mean two databases."""
    click.echo(f"database: {settings.database_label}", err=True)


def _run(coroutine: Any, settings: Settings) -> Any:
    """Run a command's work; what the operator can fix is said in one line, not a traceback."""
    try:
        return asyncio.run(coroutine)
    except KennelError as error:
        raise click.ClickException(error.message) from None
    except (OSError, DBAPIError) as error:
        # The database is what the commands' work reaches out to: a refused connection, a
        # folder that can't be written or a wrong password surfaces here.
        reason = getattr(error, "orig", None) or error
        raise click.ClickException(
            f"cannot use the database {settings.database_label}: {reason} "
            f"(check {settings.database_setting})"
        ) from None


@click.group()
@click.version_option(package_name="kennel")
def main() -> None:
    """Kennel: a self-hosted server for AI workers that speaks the Handinger Workers API."""


@main.command()
@click.option("--host", help="Interface to listen on (default: KENNEL_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default: KENNEL_PORT or 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the API and run workers' tasks, in one process."""
    _without_httpx_cli()
    # The web app, the models and the tools take seconds to import: only serving needs them.
    import uvicorn

    from kennel.app import build, create_app

    settings = _settings(host=host, port=port)
    _configure_logging()
    _announce_database(settings)
    created = _run(_bootstrap(settings), settings)
    if created is not None:
        click.echo("No API key existed, so one admin key was created. It is shown only once:")
        click.echo(f"  organization: {created.organization.name}  user: {created.user.email}")
        click.echo(f"  key: {created.key}")
    click.echo(f"Dashboard: {settings.base_url}/ (sign in with an API key)")
    app = create_app(build(settings))
    _settle_garbage_collector()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=10,
        ws="none",  # Kennel serves no WebSockets: their protocol stays unloaded (0.4 MB)
    )


QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
"""HTTP clients that log every request they send at INFO (a line per model request)."""


def _configure_logging() -> None:
    """The server's log: Kennel's own lines (the access log among them) from INFO up; the HTTP
    clients only when something goes wrong."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


YOUNG_GC_THRESHOLD = 7000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""
MIDDLE_GC_THRESHOLD = 100
"""Young collections between two collections of the middle generation (Python's default: 10)."""


def _settle_garbage_collector() -> None:
    """Keep the cycle collector off what the server holds for its lifetime, and off requests.

    Started, the process holds about 250,000 objects the collector tracks (modules, classes,
    the app) that never become garbage, and every full collection walked them all again:
    100 to 170 ms each, a few times a minute under load, over a tenth of a task's CPU in a
    burst. `gc.freeze()` moves them out of the collector's sight. Young collections every 700
    allocations also walked the objects of every request in flight, then again in the older
    generations before they ended; 10 times fewer collections let most of them end unseen.
    Garbage in cycles waits at most those 7000 allocations longer. The middle generation holds
    what outlived a young collection: in a burst, the objects of hundreds of tasks waiting for
    their model. Collected every 10 young collections, it walked them all every 130 tasks or
    so (50 ms each time, most of the collector's 0.6 ms per task in bursts of 500); every 100,
    most of them have ended first (0.2 ms per task, measured). The bursts left no garbage in
    cycles for either to find. A full collection first frees what the start left in cycles
    (the app the bootstrap built and closed, among others), which frozen would stay for good.
    Only `serve` does this: a process that builds apps again and again (the tests) must not
    freeze what it will drop.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, MIDDLE_GC_THRESHOLD)


def _without_httpx_cli() -> None:
    """Keep httpx's command-line client out of the server.

    `httpx/__init__` imports its CLI (`httpx._main`: rich, pygments, click; ~70 modules and
    3 MB) whenever those are installed, and falls back to a stub `httpx.main` on ImportError.
    A `None` entry in `sys.modules` is that ImportError; the server never runs httpx's CLI.
    Must run before anything imports httpx.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


async def _bootstrap(settings: Settings) -> CreatedKey | None:
    from kennel.app import build

    kennel = build(settings)
    try:
        await kennel.catalog.check_setting()
        ProcessLock.for_database(kennel.store.database).release()
        await kennel.store.migrate()
        return await kennel.services.auth.bootstrap_admin_key()
    finally:
        await kennel.catalog.aclose()
        await kennel.store.close()


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--org", "organization", required=True, help="Organization name (created if new).")
@click.option("--user", "email", required=True, help="User e-mail (created if new).")
def create_key(organization: str, email: str) -> None:
    """Create an API key; the key is the last line printed."""
    settings = _settings()
    _announce_database(settings)
    created, was_new = _run(_create_key(settings, organization, email), settings)
    if was_new:
        click.echo(
            f"WARNING: there was no Kennel database at {settings.database_label}, so a new "
            "one was created, and the key below works only for a server on this database. "
            "If your server runs elsewhere, run this command with its KENNEL_DATA_DIR (or "
            "KENNEL_DATABASE_URL), or from the folder it runs in.",
            err=True,
        )
    click.echo(f"organization: {created.organization.name} ({created.organization.id})")
    click.echo(f"user: {created.user.email} ({created.user.id})")
    click.echo(created.key)


async def _create_key(settings: Settings, organization: str, email: str) -> tuple[CreatedKey, bool]:
    """The new key, and whether its database was created for it."""
    operations = build_operations(settings)
    try:
        was_new = await operations.store.migrate()
        return await operations.auth.create_key(organization, email), was_new
    finally:
        await operations.store.close()


@main.command()
def migrate() -> None:
    """Apply database migrations (serve does this on start too)."""
    settings = _settings()
    _announce_database(settings)
    _run(_migrate(settings), settings)
    click.echo("database is up to date")


async def _migrate(settings: Settings) -> None:
    operations = build_operations(settings)
    try:
        await operations.store.migrate()
    finally:
        await operations.store.close()


# The operators' commands live in kennel.operators, beside the ones above.
keys.add_command(list_keys)
keys.add_command(revoke_key)
main.add_command(credits)
main.add_command(usage)

if __name__ == "__main__":
    sys.exit(main())
