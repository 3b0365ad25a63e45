"""One queue: webhook deliveries and outgoing mail wait in `jobs` like turns; their own tables
keep what they carry, not where they are on their way

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_ATTEMPTS = 8
"""The default of KENNEL_WEBHOOK_MAX_ATTEMPTS and KENNEL_SMTP_MAX_ATTEMPTS: the old rows kept
no limit of their own (the setting was read at each attempt)."""

# A waiting row becomes a queued job due when it was; an attempt cut short by a stop (its row
# was still leased) is not spent, as an interrupted job's is not.
_MOVE = """
INSERT INTO jobs (kind, ref, status, run_after, attempts, max_attempts, last_error, created_at)
SELECT '{kind}', id, 'queued', next_attempt_at,
       CASE WHEN status = '{leased}' THEN attempts - 1 ELSE attempts END,
       CASE WHEN attempts >= {most} THEN attempts + 1 ELSE {most} END,
       {last_error}, created_at
FROM {table}
WHERE status IN ('pending', '{leased}')
"""

_QUEUE_COLUMNS = ("status", "attempts", "next_attempt_at", "lease_owner", "lease_expires_at")


def upgrade() -> None:
    op.execute(
        _MOVE.format(
            kind="webhook",
            leased="delivering",
            most=MAX_ATTEMPTS,
            last_error="NULL",
            table="webhook_deliveries",
        )
    )
    op.execute(
        _MOVE.format(
            kind="mail",
            leased="sending",
            most=MAX_ATTEMPTS,
            last_error="last_error",
            table="email_outbox",
        )
    )
    op.drop_index("ix_webhook_deliveries_status_next", table_name="webhook_deliveries")
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        for column in (*_QUEUE_COLUMNS, "finished_at"):
            batch_op.drop_column(column)
        batch_op.create_index("ix_webhook_deliveries_worker_id", ["worker_id"])
    op.drop_index("ix_email_outbox_status_next", table_name="email_outbox")
    with op.batch_alter_table("email_outbox") as batch_op:
        for column in (*_QUEUE_COLUMNS, "last_error", "finished_at"):
            batch_op.drop_column(column)
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index("ix_jobs_kind_ref", ["kind", "ref"])


# Back: rows whose job is still waiting are pending again (due when the job was); the others
# are taken as finished (`delivered`, `sent`), as the old loops would no longer look at them.
_RESTORE = """
UPDATE {table} SET status = 'pending',
    attempts = (SELECT attempts FROM jobs WHERE kind = '{kind}' AND ref = {table}.id),
    next_attempt_at = (SELECT run_after FROM jobs WHERE kind = '{kind}' AND ref = {table}.id)
WHERE id IN (SELECT ref FROM jobs WHERE kind = '{kind}' AND status IN ('queued', 'running'))
"""


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_kind_ref")
    for table, done in (("webhook_deliveries", "delivered"), ("email_outbox", "sent")):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column("status", sa.String(16), nullable=False, server_default=done)
            )
            batch_op.add_column(
                sa.Column("attempts", sa.Integer(), nullable=False, server_default="0")
            )
            batch_op.add_column(
                sa.Column("next_attempt_at", sa.BigInteger(), nullable=False, server_default="0")
            )
            batch_op.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
            batch_op.add_column(sa.Column("lease_expires_at", sa.BigInteger(), nullable=True))
            if table == "email_outbox":
                batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
            batch_op.add_column(sa.Column("finished_at", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_worker_id")
    op.execute(_RESTORE.format(table="webhook_deliveries", kind="webhook"))
    op.execute(_RESTORE.format(table="email_outbox", kind="mail"))
    op.execute("DELETE FROM jobs WHERE kind IN ('webhook', 'mail')")
    op.create_index(
        "ix_webhook_deliveries_status_next", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_email_outbox_status_next", "email_outbox", ["status", "next_attempt_at"])
