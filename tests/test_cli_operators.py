"""Operators' commands (`kennel keys list|revoke`, `credits show|set`, `usage`) on a real
database, SQLite file or PostgreSQL, through click's CliRunner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from conftest import FakeClock
from kennel.cli import main
from kennel.config import Settings
from kennel.models import Worker
from kennel.storage import Database, Store
from records import finished_turn, stored_worker


class Cli:
    """Runs `kennel …` in this process against one database."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.database_url = database_url
        self.env = {"KENNEL_DATABASE_URL": database_url, "KENNEL_DATA_DIR": str(data_dir)}

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)

    def new_key(self, organization: str, email: str) -> str:
        result = self("keys", "create", "--org", organization, "--user", email)
        assert result.exit_code == 0, result.output
        return result.stdout.strip().splitlines()[-1]

    def table(self, *args: str) -> list[list[str]]:
        """The rows of a command's table (header first), split on runs of two spaces."""
        result = self(*args)
        assert result.exit_code == 0, result.stderr
        return [
            [cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines(result)
        ]

    def on_store(self, work: Callable[[Store], Awaitable[None]]) -> None:
        """Run `work` on the command's database, as a server would have written it."""

        async def run() -> None:
            store = Store(Database(self.database_url))
            try:
                await work(store)
            finally:
                await store.close()

        asyncio.run(run())


def lines(result: Result) -> list[str]:
    return result.stdout.strip().splitlines()


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    return Cli(database_url, tmp_path)


def test_every_command_names_its_database_without_the_password(cli: Cli, database_url: str) -> None:
    cli.new_key("acme", "ada@acme.test")
    url = sa.engine.make_url(database_url)
    if not url.drivername.startswith("sqlite"):
        # PostgreSQL here trusts local connections, so a password is sent and ignored.
        cli.env["KENNEL_DATABASE_URL"] = url.set(password="hunter2").render_as_string(False)
    for args in (
        ["keys", "list"],
        ["keys", "revoke", "hdg_zzzzzzzz"],
        ["credits", "show"],
        ["credits", "set", "--org", "acme", "5"],
        ["usage"],
    ):
        result = cli(*args)
        first = result.stderr.splitlines()[0]
        assert first.startswith("database: ") and str(url.database) in first, args
        assert "hunter2" not in result.stderr + result.stdout
    masked = Settings(database_url="postgresql+asyncpg://kennel:hunter2@db/k").database_label
    assert masked == "postgresql+asyncpg://kennel:***@db/k (from KENNEL_DATABASE_URL)"


def test_keys_are_listed_and_revoked_by_prefix(cli: Cli) -> None:
    ada = cli.new_key("acme", "ada@acme.test")
    cli.new_key("globex", "eve@globex.test")

    header, *rows = cli.table("keys", "list")
    assert header == ["PREFIX", "ID", "ORGANIZATION", "USER", "CREATED", "LAST USED", "STATE"]
    assert [row[2:4] for row in rows] == [["acme", "ada@acme.test"], ["globex", "eve@globex.test"]]
    assert rows[0][0] == ada[:12] and rows[0][-2:] == ["never", "active"]
    datetime.strptime(rows[0][4], "%Y-%m-%dT%H:%M:%SZ")
    assert ada not in cli("keys", "list").output

    revoked = cli("keys", "revoke", ada[:12])
    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout.startswith(f"revoked {ada[:12]} ({rows[0][1]}) of ada@acme.test")
    _, *after = cli.table("keys", "list")
    assert after[0][-1].startswith("revoked 20") and after[1][-1] == "active"
    again = cli("keys", "revoke", rows[0][1])
    assert again.exit_code == 0 and "already revoked" in again.stdout

    _, *globex = cli.table("keys", "list", "--org", "globex")
    assert [row[3] for row in globex] == ["eve@globex.test"]


def test_user_errors_exit_1_with_the_reason(cli: Cli) -> None:
    cli.new_key("acme", "ada@acme.test")

    async def twins(store: Store) -> None:
        _, user = await store.auth.ensure_member("acme", "bob@acme.test", datetime.now(UTC))
        for n, prefix in enumerate(("hdg_twin0001", "hdg_twin0002")):
            await store.auth.create_api_key(user, f"{n}" * 64, prefix, datetime.now(UTC))

    cli.on_store(twins)
    cases = {
        ("keys", "revoke", "hdg_twin"): "several keys",
        ("keys", "revoke", "hdg_nothere"): "no API key starts with",
        ("keys", "revoke", "hdg_"): "at least 8 characters",
        ("keys", "list", "--org", "initech"): "no organization is named 'initech'",
        ("credits", "show", "--org", "initech"): "no organization is named",
        ("credits", "set", "--org", "acme", "-3"): "whole number",
        ("credits", "set", "--org", "acme", "lots"): "whole number",
        ("credits", "set", "--org", "initech", "5"): "no organization is named",
        ("usage", "--since", "last week"): "YYYY-MM-DD",
        ("usage", "--org", "initech"): "no organization is named",
    }
    for args, reason in cases.items():
        result = cli(*args)
        assert (result.exit_code, reason in result.stderr) == (1, True), (args, result.stderr)
    _, *rows = cli.table("keys", "list")
    assert [row[-1] for row in rows] == ["active", "active", "active"]


def test_credits_are_shown_and_set(cli: Cli) -> None:
    cli.new_key("acme", "ada@acme.test")
    cli.new_key("globex", "eve@globex.test")

    header, *rows = cli.table("credits", "show")
    assert header == ["ORGANIZATION", "BALANCE", "ID"]
    assert [row[:2] for row in rows] == [["acme", "unlimited"], ["globex", "unlimited"]]
    assert all(row[2].startswith("org_") for row in rows)
    result = cli("credits", "set", "--org", "acme", "1500")
    assert (result.exit_code, result.stdout.strip()) == (
        0,
        "acme: credit balance 1500 (was unlimited)",
    )
    assert [row[:2] for row in cli.table("credits", "show", "--org", "acme")] == [
        ["ORGANIZATION", "BALANCE"],
        ["acme", "1500"],
    ]
    assert (
        "balance unlimited (was 1500)" in cli("credits", "set", "--org", "acme", "unlimited").stdout
    )
    assert cli.table("credits", "show", "--org", "globex")[1][1] == "unlimited"


def test_usage_per_day_per_worker_and_organization(cli: Cli) -> None:
    cli.new_key("acme", "ada@acme.test")
    clock = FakeClock(datetime(2026, 5, 11, 9, 0, tzinfo=UTC))

    async def work(store: Store) -> None:
        rex: Worker = await stored_worker(store, clock, "ada@acme.test", title="Rex\x1b[2J")
        await finished_turn(store, clock, rex, 2)
        clock.advance(86_400)
        await finished_turn(store, clock, rex, 3)
        await finished_turn(store, clock, rex, 4)

    cli.on_store(work)
    result = cli("usage", "--since", "2026-05-01")
    assert "usage since 2026-05-01" in result.stderr
    header, *rows = cli.table("usage", "--since", "2026-05-01")
    assert header[:3] == ["DAY", "ORGANIZATION", "WORKER"] and header[-1] == "CREDITS"
    assert [(row[0], row[2], row[-4:]) for row in rows[:-1]] == [
        ("2026-05-11", "Rex\ufffd[2J", ["1", "200", "10", "2"]),
        ("2026-05-12", "Rex\ufffd[2J", ["2", "700", "20", "7"]),
    ]
    assert rows[-1] == ["total", "3", "900", "30", "9"]
    assert "\x1b" not in result.output

    per_org = cli.table("usage", "--since", "2026-05-12", "--per", "organization", "--org", "acme")
    assert per_org[1:] == [
        ["2026-05-12", "acme", "2", "700", "20", "7"],
        ["total", "2", "700", "20", "7"],
    ]


def test_a_missing_sqlite_database_is_not_created(tmp_path: Path) -> None:
    cli = Cli(f"sqlite+aiosqlite:///{tmp_path / 'elsewhere' / 'kennel.db'}", tmp_path)
    for args in (["keys", "list"], ["credits", "show"], ["usage"], ["keys", "revoke", "key_x"]):
        result = cli(*args)
        assert result.exit_code == 1 and "there is no database at" in result.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_a_database_url_kennel_cannot_use_exits_1(tmp_path: Path) -> None:
    for url, reason in (
        ("mysql://kennel:hunter2@db/kennel", "postgresql+asyncpg://"),
        ("postgresql://kennel:hunter2@db/kennel", "postgresql+asyncpg://"),
        ("hunter2 is not a URL", "not a database URL"),
    ):
        result = Cli(url, tmp_path)("credits", "show")
        assert result.exit_code == 1 and reason in result.stderr, result.stderr
        assert "hunter2" not in result.stderr
