"""Migrations: they build exactly the tables the code declares, and HEAD names the newest."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from kennel.storage import Store
from kennel.storage.migrate import HEAD, alembic_config, current_revision
from kennel.storage.tables import metadata


def test_head_names_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


async def test_a_migrated_database_is_at_head_and_matches_the_tables(store: Store) -> None:
    assert await current_revision(store.database) == HEAD

    def differences(sync: sa.Connection) -> list[object]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    assert await store.database.read(differences) == []


async def test_migrating_again_changes_nothing(store: Store) -> None:
    await store.migrate()
    assert await current_revision(store.database) == HEAD
