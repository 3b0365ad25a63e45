"""The `kennel` command: serve, manage API keys, migrate."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click
import uvicorn
from pydantic import ValidationError

from kennel.app import build, create_app
from kennel.config import Settings
from kennel.errors import KennelError
from kennel.services.auth import CreatedKey
from kennel.storage.database import ProcessLock


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as error:
        raise click.ClickException(f"invalid settings:\n{error}") from None


def _run(coroutine: Any) -> Any:
    try:
        return asyncio.run(coroutine)
    except KennelError as error:
        raise click.ClickException(error.message) from None


@click.group()
@click.version_option(package_name="kennel")
def main() -> None:
    """Kennel: a self-hosted server for AI workers that speaks the Handinger Workers API."""


@main.command()
@click.option("--host", help="Interface to listen on (default: KENNEL_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default: KENNEL_PORT or 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the API and run workers' tasks, in one process."""
    settings = _settings(host=host, port=port)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    created = _run(_bootstrap(settings))
    if created is not None:
        click.echo("No API key existed, so one admin key was created. It is shown only once:")
        click.echo(f"  organization: {created.organization.name}  user: {created.user.email}")
        click.echo(f"  key: {created.key}")
    app = create_app(build(settings))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


async def _bootstrap(settings: Settings) -> CreatedKey | None:
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
    created: CreatedKey = _run(_create_key(_settings(), organization, email))
    click.echo(f"organization: {created.organization.name} ({created.organization.id})")
    click.echo(f"user: {created.user.email} ({created.user.id})")
    click.echo(created.key)


async def _create_key(settings: Settings, organization: str, email: str) -> CreatedKey:
    kennel = build(settings)
    try:
        await kennel.store.migrate()
        return await kennel.services.auth.create_key(organization, email)
    finally:
        await kennel.catalog.aclose()
        await kennel.store.close()


@main.command()
def migrate() -> None:
    """Apply database migrations (serve does this on start too)."""
    _run(_migrate(_settings()))
    click.echo("database is up to date")


async def _migrate(settings: Settings) -> None:
    kennel = build(settings)
    try:
        await kennel.store.migrate()
    finally:
        await kennel.catalog.aclose()
        await kennel.store.close()


if __name__ == "__main__":
    sys.exit(main())
