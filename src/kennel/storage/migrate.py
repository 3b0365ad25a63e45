"""Apply Alembic migrations; `kennel serve` does it at start, `kennel migrate` on demand."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from kennel.storage.database import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def migrate(database: Database, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run on every start and from several processes."""
    async with database.write() as conn:
        if not database.is_sqlite:
            # Several processes may start together on one PostgreSQL: one migrates, the others wait.
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7349021)"))
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
