"""The `kennel` command: first-start admin key, key creation, migrations."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from kennel.cli import _configure_logging, main
from server import KENNEL, free_port, python_lines


def _kennel(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KENNEL_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(KENNEL), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _serve_until_ready(data_dir: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    port = free_port()
    env = {**os.environ, "KENNEL_DATA_DIR": str(data_dir), "KENNEL_RATE_LIMIT_PER_SECOND": "0"}
    process = subprocess.Popen(
        [str(KENNEL), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/api/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    process.terminate()
    output, _ = process.communicate(timeout=15)
    return process, base_url, output.splitlines()


def test_first_serve_prints_one_admin_key_once(tmp_path: Path) -> None:
    _, _, first = _serve_until_ready(tmp_path)
    keys = [line.split("key: ", 1)[1] for line in first if "key: hdg_" in line]
    assert len(keys) == 1
    _, _, second = _serve_until_ready(tmp_path)
    assert not [line for line in second if "key: hdg_" in line]

    created = _kennel(tmp_path, "keys", "create", "--org", "acme", "--user", "bob@acme.test")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().splitlines()[-1].startswith("hdg_")


def test_keys_create_refuses_a_bad_email(tmp_path: Path) -> None:
    result = _kennel(tmp_path, "keys", "create", "--org", "acme", "--user", "not-an-email")
    assert result.returncode != 0
    assert "not an e-mail address" in result.stderr


def test_migrate(tmp_path: Path) -> None:
    result = _kennel(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kennel.db").exists()


def test_a_second_server_on_the_same_sqlite_database_is_refused(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "KENNEL_DATA_DIR": str(tmp_path)}
    first = subprocess.Popen(
        [str(KENNEL), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        second = subprocess.run(
            [str(KENNEL), "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert "another Kennel process is serving" in second.stdout + second.stderr
    finally:
        first.terminate()
        first.wait(timeout=15)


def _invoke(*args: str, **env: str | None) -> Result:
    """The command in this process (click's runner), with stdout and stderr kept apart."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_keys_create_names_its_database_and_warns_when_it_made_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    database = elsewhere / ".kennel" / "kennel.db"
    args = ("keys", "create", "--org", "acme", "--user", "ada@acme.test")

    first = _invoke(*args, KENNEL_DATA_DIR=None, KENNEL_DATABASE_URL=None)
    assert first.exit_code == 0, first.output
    assert f"database: sqlite+aiosqlite:///{database} (from KENNEL_DATA_DIR)" in first.stderr
    assert "WARNING: there was no Kennel database" in first.stderr
    assert "KENNEL_DATA_DIR (or KENNEL_DATABASE_URL)" in first.stderr
    assert first.stdout.strip().splitlines()[-1].startswith("hdg_")
    assert "WARNING" not in first.stdout  # scripts read the key from stdout

    second = _invoke(*args, KENNEL_DATA_DIR=None, KENNEL_DATABASE_URL=None)
    assert second.exit_code == 0, second.output
    assert f"database: sqlite+aiosqlite:///{database}" in second.stderr
    assert "WARNING" not in second.stderr


def test_migrate_names_its_database(tmp_path: Path) -> None:
    result = _invoke("migrate", KENNEL_DATA_DIR=str(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"database: sqlite+aiosqlite:///{tmp_path / 'kennel.db'}" in result.stderr


def test_an_unreachable_database_is_one_clear_line_with_the_password_masked() -> None:
    url = f"postgresql+asyncpg://kennel:s3cret@127.0.0.1:{free_port()}/kennel"
    result = _invoke(
        "keys", "create", "--org", "acme", "--user", "a@acme.test", KENNEL_DATABASE_URL=url
    )
    assert result.exit_code != 0
    assert "cannot use the database postgresql+asyncpg://kennel:***@127.0.0.1:" in result.stderr
    assert "(check KENNEL_DATABASE_URL)" in result.stderr
    assert "s3cret" not in result.output and "Traceback" not in result.output


def test_serve_leaves_httpx_command_line_client_out() -> None:
    """The server imports httpx without its CLI (rich, pygments), which it never runs."""
    script = (
        "import sys\n"
        "from kennel.cli import _without_httpx_cli\n"
        "_without_httpx_cli()\n"
        "import kennel.app, httpx\n"
        "print(sorted({'rich', 'pygments'} & set(sys.modules)))\n"
        "print(httpx.AsyncClient.__name__)\n"
    )
    assert python_lines(script) == ["[]", "AsyncClient"]


def test_serve_loads_the_libraries_of_output_schemas_cron_and_mail_only_when_used() -> None:
    """jsonschema, croniter and aiosmtplib (about 3 MiB) load with the first output schema,
    cron schedule and mail, not with the app."""
    script = (
        "import sys\n"
        "from kennel.cli import _without_httpx_cli\n"
        "_without_httpx_cli()\n"
        "import kennel.app, kennel.services.mailer\n"
        "lazy = {'jsonschema', 'referencing', 'croniter', 'aiosmtplib'}\n"
        "print(sorted(lazy & set(sys.modules)))\n"
        "from kennel.agent.outputschema import problem_of\n"
        "from kennel.services.schedules import check_cron\n"
        "print(problem_of({'type': 'object'}), check_cron('0 9 * * *'))\n"
        "print(sorted(lazy & set(sys.modules)))\n"
    )
    assert python_lines(script) == [
        "[]",
        "None 0 9 * * *",
        "['croniter', 'jsonschema', 'referencing']",
    ]


def test_serve_on_sqlite_leaves_out_libraries_it_never_uses(tmp_path: Path) -> None:
    """A server on SQLite writes JSON columns and upserts without SQLAlchemy's PostgreSQL
    dialect, its asyncio layer or its ORM (about 9 MiB), and writes AI SDK chunks without
    pydantic-ai's UI adapters (about 3 MiB)."""
    script = (
        "import asyncio, sys\n"
        "import sqlalchemy as sa\n"
        "import kennel.app\n"
        "from kennel.storage.database import Database\n"
        "from kennel.storage.statements import upsert\n"
        "from kennel.storage.tables import JSON\n"
        "table = sa.Table('t', sa.MetaData(), sa.Column('id', sa.Integer, primary_key=True),\n"
        "                 sa.Column('value', JSON))\n"
        "def work(conn):\n"
        "    table.create(conn)\n"
        "    for value in ({'a': [1]}, {'b': None}):\n"
        "        insert = upsert(conn, table).values(id=1, value=value)\n"
        "        conn.execute(insert.on_conflict_do_update(\n"
        "            index_elements=['id'], set_={'value': insert.excluded.value}))\n"
        "    conn.execute(table.insert().values(id=2, value=None))\n"
        "    return conn.execute(sa.select(table.c.value, table.c.value.is_(None))\n"
        "                        .order_by(table.c.id)).all()\n"
        "async def main():\n"
        f"    database = Database('sqlite:///{tmp_path}/kennel.db')\n"
        "    print(await database.write(work))\n"
        "    await database.close()\n"
        "asyncio.run(main())\n"
        "heavy = ('sqlalchemy.dialects.postgresql', 'sqlalchemy.ext.asyncio', 'sqlalchemy.orm',\n"
        "         'pydantic_ai.ui')\n"
        "print([name for name in heavy if name in sys.modules])\n"
    )
    assert python_lines(script) == ["[({'b': None}, False), (None, True)]", "[]"]


def test_serve_freezes_what_it_has_built_collects_less_often_and_loads_no_websockets(
    tmp_path: Path,
) -> None:
    """Before serving, the objects built so far leave the cycle collector's generations, and
    none of them is garbage that would stay frozen for good."""
    script = (
        "import gc, sys, uvicorn\n"
        "def run(app, **options):\n"
        "    print(gc.get_freeze_count() > 100_000, *gc.get_threshold()[:2], options['ws'])\n"
        "    gc.unfreeze()\n"
        "    print(gc.collect())\n"
        "uvicorn.run = run\n"
        "from kennel.cli import main\n"
        "main(['serve', '--port', '0'])\n"
    )
    lines = python_lines(script, {**os.environ, "KENNEL_DATA_DIR": str(tmp_path)})
    assert lines[-2:] == ["True 7000 100 none", "0"]


def test_the_server_log_leaves_out_each_model_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kennel's access log stays at INFO; the HTTP clients' line per request does not."""
    monkeypatch.setattr(logging.root, "handlers", [])
    loggers = [logging.root, logging.getLogger("httpx2"), logging.getLogger("kennel.access")]
    levels = [logger.level for logger in loggers]
    try:
        _configure_logging()

        assert logging.getLogger("kennel.access").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpx2").isEnabledFor(logging.INFO)
        assert logging.getLogger("httpx2").isEnabledFor(logging.WARNING)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)  # setLevel, not an attribute: it also clears level caches
