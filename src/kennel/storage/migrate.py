"""Apply Alembic migrations; `kennel serve` does it at start, `kennel migrate` on demand."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from kennel.storage.database import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")

# The newest revision in migrations/versions (a test keeps this in step). A database already
# there needs no Alembic at all, which keeps its ~12 MB out of a serving process.
HEAD = "0010"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def current_revision(database: Database) -> str | None:
    query = sa.text("SELECT version_num FROM alembic_version")
    try:
        found = await database.read(lambda conn: conn.execute(query).scalar_one_or_none())
    except DBAPIError:  # no alembic_version table: a new database
        return None
    return None if found is None else str(found)


async def migrate(database: Database, revision: str = "head") -> bool:
    """Bring the schema to `revision`; safe to run on every start and from several processes.
    True when the database had no Kennel schema before: it was new (or someone else's)."""
    found = await current_revision(database)
    if revision == "head" and found == HEAD:
        return False
    from alembic import command

    def work(conn: sa.Connection) -> None:
        database.dialect.serialize_migrations(conn)
        command.upgrade(alembic_config(conn), revision)

    await database.write(work)
    return found is None
