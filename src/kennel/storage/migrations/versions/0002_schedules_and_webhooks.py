"""schedules, webhooks and the webhook execution log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("worker_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("budget", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("delay_seconds", sa.Integer(), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("run_at", sa.BigInteger(), nullable=True),
        sa.Column("next_run_at", sa.BigInteger(), nullable=True),
        sa.Column("created_by_user_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("cancelled_at", sa.BigInteger(), nullable=True),
        sa.Column("last_fired_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_schedules_worker_id_workers")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_schedules_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["users.id"],
            name=op.f("fk_schedules_created_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index("ix_schedules_worker_created", "schedules", ["worker_id", "created_at"])
    op.create_index("ix_schedules_next_run_at", "schedules", ["next_run_at"])

    op.create_table(
        "webhooks",
        sa.Column("worker_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_webhooks_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_webhooks")),
    )

    op.create_table(
        "webhook_executions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("worker_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("task_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("task_id", sa.String(length=128), nullable=True),
        sa.Column("task_title", sa.String(length=200), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("request_status", sa.String(length=16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_webhook_executions_worker_id_workers")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_webhook_executions_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["task_key"], ["tasks.key"], name=op.f("fk_webhook_executions_task_key_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_executions")),
    )
    op.create_index(
        "ix_webhook_executions_worker_created", "webhook_executions", ["worker_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_executions_worker_created", table_name="webhook_executions")
    op.drop_table("webhook_executions")
    op.drop_table("webhooks")
    op.drop_index("ix_schedules_next_run_at", table_name="schedules")
    op.drop_index("ix_schedules_worker_created", table_name="schedules")
    op.drop_table("schedules")
