"""Operators' commands: `kennel keys list|revoke`, `kennel credits show|set`, `kennel usage`.

Each says on stderr which database it works on, prints a table (or one line) on stdout, and
exits 1 with a message on a user error: an unknown organization, an ambiguous key prefix...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar

import click
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from kennel.config import Settings
from kennel.errors import KennelError
from kennel.models import ApiKey, DailyUsage, Organization
from kennel.operations import Operations, build_operations
from kennel.services.organizations import UNLIMITED, credit_amount
from kennel.terminal import inert, render_table

T = TypeVar("T")
ORG_HELP = "Organization name (see `kennel credits show`)."


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise click.ClickException(f"invalid settings:\n{error}") from None


def _run(work: Callable[[Operations], Awaitable[T]]) -> T:
    """`work` on the configured database, named on stderr first; domain errors exit 1."""
    settings = _settings()
    _check_database(settings)
    try:
        return asyncio.run(_on_database(settings, work))
    except KennelError as error:
        # Messages quote names users chose (organizations, e-mails): keep them inert too.
        raise click.ClickException(inert(error.message, limit=2000)) from None
    except (OSError, DBAPIError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise click.ClickException(f"cannot use the database: {reason}") from None


def _check_database(settings: Settings) -> None:
    """Name the database; refuse one Kennel can't use, or a SQLite file that isn't there (the
    command was run with other settings than the server's: it would make a new, empty one)."""
    click.echo(f"database: {settings.database_label}", err=True)
    try:
        parsed = sa.engine.make_url(settings.resolved_database_url)
    except sa.exc.ArgumentError:
        raise click.ClickException("KENNEL_DATABASE_URL is not a database URL") from None
    if parsed.drivername not in _DRIVERS:
        raise click.ClickException(
            "Kennel works on sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
        )
    path = parsed.database
    is_file = parsed.get_backend_name() == "sqlite" and path and path != ":memory:"
    if is_file and not Path(str(path)).exists():
        raise click.ClickException(
            f"there is no database at {path}: run the command where the server runs, or "
            "set KENNEL_DATA_DIR or KENNEL_DATABASE_URL as the server has them"
        )


_DRIVERS = ("sqlite", "sqlite+aiosqlite", "postgresql+asyncpg")


async def _on_database(settings: Settings, work: Callable[[Operations], Awaitable[T]]) -> T:
    async with _opened(settings) as operations:
        return await work(operations)


@asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[Operations]:
    operations = build_operations(settings)
    try:
        await operations.store.migrate()
        yield operations
    finally:
        await operations.store.close()


def _moment(moment: datetime | None, absent: str = "never") -> str:
    return absent if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _balance(organization: Organization) -> str:
    balance = organization.credit_balance
    return UNLIMITED if balance is None else str(balance)


async def _organization_id(operations: Operations, name: str | None) -> str | None:
    return None if name is None else (await operations.organizations.named(name)).id


@click.command("list")
@click.option("--org", "organization", help=ORG_HELP + " Default: every organization.")
def list_keys(organization: str | None) -> None:
    """List API keys (revoked ones too): prefix, id, owner, created, last used, state.

    Only a prefix of each key is stored in clear; the key itself was shown once, at creation.
    Last use is recorded at most once a minute per key. Times are UTC.
    """

    async def work(operations: Operations) -> list[ApiKey]:
        organization_id = await _organization_id(operations, organization)
        return await operations.keys.list_all(organization_id)

    found = _run(work)
    if not found:
        click.echo("no API keys")
        return
    rows = [
        [
            key.prefix,
            key.id,
            key.organization_name,
            key.user_email,
            _moment(key.created_at),
            _moment(key.last_used_at),
            "active" if key.is_active else f"revoked {_moment(key.revoked_at)}",
        ]
        for key in found
    ]
    headers = ["PREFIX", "ID", "ORGANIZATION", "USER", "CREATED", "LAST USED", "STATE"]
    click.echo(render_table(headers, rows))


@click.command("revoke")
@click.argument("prefix")
def revoke_key(prefix: str) -> None:
    """Revoke the API key PREFIX names, at once for every server on this database.

    PREFIX is the key's prefix as `kennel keys list` shows it (its start, at least 8
    characters, if that names one key only), the key's id (key_…) or the whole key. A prefix
    shared by several keys is refused: give more characters or the id.
    """
    revocation = _run(lambda operations: operations.keys.revoke(prefix))
    key = revocation.key
    owner = f"{key.prefix} ({key.id}) of {key.user_email} in {key.organization_name}"
    if revocation.newly:
        click.echo(f"revoked {owner}")
    else:
        click.echo(f"{owner} was already revoked at {_moment(key.revoked_at)}")


@click.group()
def credits() -> None:
    """Show or set organizations' credit balances."""


@credits.command("show")
@click.option("--org", "organization", help=ORG_HELP + " Default: every organization.")
def show_credits(organization: str | None) -> None:
    """Show credit balances; `unlimited` means tasks are never refused for credits."""

    async def work(operations: Operations) -> list[Organization]:
        if organization is not None:
            return [await operations.organizations.named(organization)]
        return await operations.organizations.every()

    found = _run(work)
    if not found:
        click.echo("no organizations")
        return
    rows = [[org.name, _balance(org), org.id] for org in found]
    click.echo(render_table(["ORGANIZATION", "BALANCE", "ID"], rows, right=[1]))


# Unknown options pass as arguments, so that "-5" gets the message about amounts.
@credits.command("set", context_settings={"ignore_unknown_options": True})
@click.option("--org", "organization", required=True, help=ORG_HELP)
@click.argument("amount")
def set_credits(organization: str, amount: str) -> None:
    """Set an organization's credit balance to AMOUNT: a whole number of credits, or
    `unlimited`.

    Each turn spends its credits from the balance; at 0 or below, new tasks are refused (402).
    """

    async def work(operations: Operations) -> tuple[Organization, Organization]:
        balance = credit_amount(amount)
        before = await operations.organizations.named(organization)
        return before, await operations.organizations.set_credits(before.id, balance)

    before, after = _run(work)
    click.echo(f"{after.name}: credit balance {_balance(after)} (was {_balance(before)})")


@click.command("usage")
@click.option("--org", "organization", help=ORG_HELP + " Default: every organization.")
@click.option("--since", help="First day, YYYY-MM-DD (UTC). Default: the last 30 days.")
@click.option(
    "--per",
    type=click.Choice(["worker", "organization"]),
    default="worker",
    show_default=True,
    help="One line per day per worker, or per day per organization.",
)
def usage(organization: str | None, since: str | None, per: str) -> None:
    """Credits and tokens used, per day and worker (or organization).

    Counted from the turns that finished each day (UTC), the total last. Credits spent outside
    turns (a worker's instructions written from a prompt) are not in it.
    """
    first_day = _day(since) if since is not None else None

    async def work(operations: Operations) -> tuple[date, list[DailyUsage]]:
        organization_id = await _organization_id(operations, organization)
        start = first_day or operations.usage.default_since()
        rows = await operations.usage.daily(
            organization_id=organization_id, since=start, per_worker=per == "worker"
        )
        return start, rows

    start, rows = _run(work)
    click.echo(f"usage since {start.isoformat()} (UTC days)", err=True)
    click.echo(_usage_table(rows, per_worker=per == "worker"))


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise click.ClickException(f"--since wants a date as YYYY-MM-DD, not {text!r}") from None


def _usage_table(rows: list[DailyUsage], *, per_worker: bool) -> str:
    headers = ["DAY", "ORGANIZATION"]
    if per_worker:
        headers += ["WORKER", "WORKER ID"]
    headers += ["TURNS", "INPUT TOKENS", "OUTPUT TOKENS", "CREDITS"]
    lines: list[list[str]] = []
    for row in rows:
        line = [row.day.isoformat(), row.organization_name]
        if per_worker:
            line += [row.worker_title or "", row.worker_id or ""]
        lines.append(line + [str(n) for n in _counts(row)])
    totals = [sum(column) for column in zip(*(_counts(row) for row in rows), strict=True)]
    padding = [""] * (len(headers) - 5)
    lines.append(["total", *padding, *(str(n) for n in totals or [0, 0, 0, 0])])
    numbers = list(range(len(headers) - 4, len(headers)))
    return render_table(headers, lines, right=numbers)


def _counts(row: DailyUsage) -> tuple[int, int, int, int]:
    return row.turns, row.input_tokens, row.output_tokens, row.credits
