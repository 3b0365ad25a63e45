"""task sources: the pages a task's worker fetched (spec §16.4)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_sources",
        sa.Column("task_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_key"], ["tasks.key"], name=op.f("fk_task_sources_task_key_tasks")
        ),
        sa.PrimaryKeyConstraint("task_key", "id", name=op.f("pk_task_sources")),
    )


def downgrade() -> None:
    op.drop_table("task_sources")
