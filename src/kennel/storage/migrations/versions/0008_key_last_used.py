"""api_keys.last_used_at for operators and the dashboard; an index for usage reports by day

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.BigInteger(), nullable=True))
    op.create_index("ix_turns_completed_at", "turns", ["completed_at"])


def downgrade() -> None:
    op.drop_index("ix_turns_completed_at", table_name="turns")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("last_used_at")
