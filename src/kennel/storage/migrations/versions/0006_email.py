"""e-mail: the workers' sender allow-lists, the mail of each task, and the outgoing mail queue

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TASK_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("workers", sa.Column("email_allow_list", JSON, nullable=True))

    op.create_table(
        "email_messages",
        sa.Column("id", TASK_KEY, nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("worker_id", sa.String(length=32), nullable=False),
        sa.Column("task_key", TASK_KEY, nullable=False),
        sa.Column("turn_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("references", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_email_messages_worker_id_workers")
        ),
        sa.ForeignKeyConstraint(
            ["task_key"], ["tasks.key"], name=op.f("fk_email_messages_task_key_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_messages")),
    )
    op.create_index("ix_email_messages_message_id", "email_messages", ["message_id"])
    op.create_index("ix_email_messages_turn_id", "email_messages", ["turn_id"])

    op.create_table(
        "email_outbox",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("worker_id", sa.String(length=32), nullable=False),
        sa.Column("task_key", TASK_KEY, nullable=True),
        sa.Column("turn_id", sa.String(length=32), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("in_reply_to", sa.String(length=998), nullable=True),
        sa.Column("references", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("files", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_email_outbox_worker_id_workers")
        ),
        sa.ForeignKeyConstraint(
            ["task_key"], ["tasks.key"], name=op.f("fk_email_outbox_task_key_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_outbox")),
    )
    op.create_index("ix_email_outbox_status_next", "email_outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_email_outbox_status_next", table_name="email_outbox")
    op.drop_table("email_outbox")
    op.drop_index("ix_email_messages_turn_id", table_name="email_messages")
    op.drop_index("ix_email_messages_message_id", table_name="email_messages")
    op.drop_table("email_messages")
    op.drop_column("workers", "email_allow_list")
