"""Throwaway databases for tests: a SQLite file in tmp_path, or a fresh PostgreSQL database.

PostgreSQL databases are cloned from a template migrated once per session, so each test
gets an empty, fully migrated database in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from kennel.storage import Database, migrate

PG_DSN = os.environ.get("KENNEL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_TEMPLATE = f"kennel_template_{os.getpid()}"
_template_done = False


def sqlite_url(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'kennel.db'}"


def _pg_url(name: str) -> str:
    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _ensure_template() -> None:
    global _template_done
    if _template_done:
        return
    await _admin(f'DROP DATABASE IF EXISTS "{_TEMPLATE}"')
    await _admin(f'CREATE DATABASE "{_TEMPLATE}"')
    database = Database(_pg_url(_TEMPLATE))
    try:
        await migrate(database)
    finally:
        await database.close()
    _template_done = True


@asynccontextmanager
async def postgres_url() -> AsyncIterator[str]:
    """A new migrated PostgreSQL database, dropped afterwards."""
    await _ensure_template()
    name = f"kennel_test_{secrets.token_hex(6)}"
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE}"')
    try:
        yield _pg_url(name)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def empty_postgres_url() -> AsyncIterator[str]:
    """A new PostgreSQL database without any schema, dropped afterwards."""
    name = f"kennel_test_{secrets.token_hex(6)}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def drop_template() -> None:
    if _template_done:
        await _admin(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
