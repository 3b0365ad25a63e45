"""turn_steps: the finished steps of running turns; jobs remember when they were claimed and
progressed, and the crashes a turn went through without progress

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "turn_steps",
        sa.Column("turn_id", sa.String(32), sa.ForeignKey("turns.id"), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("messages", sa.LargeBinary(), nullable=False),
        sa.Column("state", JSON, nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("claimed_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("progressed_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("strikes", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("interruptions", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("interruptions")
        batch_op.drop_column("strikes")
        batch_op.drop_column("progressed_at")
        batch_op.drop_column("claimed_at")
    op.drop_table("turn_steps")
