"""SQLAlchemy Core tables. The Alembic migrations create them: keep both in step."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.type_api import TypeEngine


class EpochMillis(sa.TypeDecorator[datetime]):
    """Timestamps as epoch milliseconds: the same on SQLite and PostgreSQL, cheap to compare."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(value.timestamp() * 1000)

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime.fromtimestamp(value / 1000, tz=UTC)


class StoredText(sa.TypeDecorator[str]):
    """Text with every NUL replaced by U+FFFD: PostgreSQL refuses NUL, and what models, tools,
    pages and mails write can hold one. (JSON columns get the same from `jsonvalues.dumps`, the
    engines' JSON serializer.)"""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


class JSONValue(sa.TypeDecorator[Any]):
    """JSON, stored as JSONB on PostgreSQL; `None` is SQL NULL, not JSON `null`.

    PostgreSQL's type module comes in only when a PostgreSQL database is used: SQLAlchemy's
    PostgreSQL dialect is about 3 MB a server on SQLite never needs."""

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(self.impl_instance)


JSON = JSONValue()

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("credit_balance", sa.BigInteger, nullable=True),
    sa.Column("created_at", EpochMillis, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("organization_id", sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.UniqueConstraint("organization_id", "email"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("organization_id", sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("user_id", sa.ForeignKey("users.id"), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Column("revoked_at", EpochMillis, nullable=True),
    # Written at most about once a minute per key (services/auth.py), not on every request.
    sa.Column("last_used_at", EpochMillis, nullable=True),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("organization_id", sa.ForeignKey("organizations.id"), nullable=False, index=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("instructions", StoredText, nullable=False),
    sa.Column("summary", sa.String(80), nullable=False),
    sa.Column("output_schema", JSON, nullable=True),
    sa.Column("visibility", sa.String(16), nullable=False),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Column("updated_at", EpochMillis, nullable=False),
    sa.Column("deleted_at", EpochMillis, nullable=True),
    # Addresses outside the organization that may start tasks by e-mail (lower case).
    sa.Column("email_allow_list", JSON, nullable=True),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("key", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("organization_id", sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("worker_id", sa.ForeignKey("workers.id"), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("triggered_by", sa.String(16), nullable=False),
    sa.Column("created_by_user_id", sa.String(32), nullable=True),
    sa.Column("metadata", JSON, nullable=False),
    sa.Column("event_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("turn_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total_credits", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("total_duration_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Column("completed_at", EpochMillis, nullable=True),
    sa.Column("archived_at", EpochMillis, nullable=True),
    sa.UniqueConstraint("organization_id", "id"),
    sa.Index("ix_tasks_worker_created", "worker_id", "created_at"),
)

turns = sa.Table(
    "turns",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("task_key", sa.ForeignKey("tasks.key"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("input", StoredText, nullable=False),
    sa.Column("budget", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("output_text", StoredText, nullable=False, server_default=""),
    sa.Column("structured_output", JSON, nullable=True),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tool_calls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("credits", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("duration_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("error", JSON, nullable=True),
    sa.Column("incomplete_reason", sa.String(64), nullable=True),
    sa.Column("first_event_seq", sa.BigInteger, nullable=True),
    sa.Column("model_messages", sa.LargeBinary, nullable=True),
    sa.Column("ui_message", JSON, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("live", sa.Boolean, nullable=False, server_default=sa.false()),
    # The files handed in with the turn: [{"path", "mediaType", "size"}]; NULL for none.
    sa.Column("attachments", JSON, nullable=True),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Column("started_at", EpochMillis, nullable=True),
    sa.Column("completed_at", EpochMillis, nullable=True),
    sa.UniqueConstraint("task_key", "seq"),
    # Usage reports select finished turns by day.
    sa.Index("ix_turns_completed_at", "completed_at"),
)

task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("task_key", sa.ForeignKey("tasks.key"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("turn_id", sa.String(32), nullable=False),
    sa.Column("body", StoredText, nullable=False),
)

# The one queue of background work: turns (`ref` a turn, `lock_key` its task, so the turns of a
# task run in order), webhook deliveries and outgoing mail (`ref` their row).
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("ref", sa.String(128), nullable=False),
    sa.Column("lock_key", sa.String(160), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_after", EpochMillis, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_token", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", EpochMillis, nullable=True),
    sa.Column("last_error", StoredText, nullable=True),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Column("finished_at", EpochMillis, nullable=True),
    # When the running attempt was claimed, and when it last finished a step (see recovery).
    sa.Column("claimed_at", EpochMillis, nullable=True),
    sa.Column("progressed_at", EpochMillis, nullable=True),
    # Interruptions in a row without progress; `strikes` counts those during which other jobs
    # finished (the job itself may be what kills its runner).
    sa.Column("strikes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("interruptions", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_jobs_status_run_after", "status", "run_after"),
    sa.Index("ix_jobs_lock_key_status", "lock_key", "status"),
    sa.Index("ix_jobs_kind_ref", "kind", "ref"),
)

workspace_files = sa.Table(
    "workspace_files",
    metadata,
    sa.Column("worker_id", sa.ForeignKey("workers.id"), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(200), nullable=False),
    sa.Column("updated_at", EpochMillis, nullable=False),
)

task_files = sa.Table(
    "task_files",
    metadata,
    sa.Column("task_key", sa.ForeignKey("tasks.key"), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("worker_id", sa.String(32), nullable=False),
    sa.Column("created_at", EpochMillis, nullable=False),
)

# `id` derives from the URL, so a page fetched again in a later turn stays one source.
task_sources = sa.Table(
    "task_sources",
    metadata,
    sa.Column("task_key", sa.ForeignKey("tasks.key"), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("title", sa.String(500), nullable=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("created_at", EpochMillis, nullable=False),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("worker_id", sa.ForeignKey("workers.id"), nullable=False),
    sa.Column("organization_id", sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("input", StoredText, nullable=False),
    sa.Column("budget", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("delay_seconds", sa.Integer, nullable=True),
    sa.Column("interval_seconds", sa.Integer, nullable=True),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=True),
    # `run_at`: the instant of a one-shot; `next_run_at`: the next firing, NULL once a
    # one-shot has fired (it then leaves the list, spec §16.13).
    sa.Column("run_at", EpochMillis, nullable=True),
    sa.Column("next_run_at", EpochMillis, nullable=True),
    sa.Column("created_by_user_id", sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Column("cancelled_at", EpochMillis, nullable=True),
    sa.Column("last_fired_at", EpochMillis, nullable=True),
    sa.Index("ix_schedules_worker_created", "worker_id", "created_at"),
    sa.Index("ix_schedules_next_run_at", "next_run_at"),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("worker_id", sa.ForeignKey("workers.id"), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("updated_at", EpochMillis, nullable=False),
)

webhook_executions = sa.Table(
    "webhook_executions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("worker_id", sa.ForeignKey("workers.id"), nullable=False),
    sa.Column("organization_id", sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("task_key", sa.ForeignKey("tasks.key"), nullable=True),
    sa.Column("task_id", sa.String(128), nullable=True),
    sa.Column("task_title", sa.String(200), nullable=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("request_status", sa.String(16), nullable=False),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("error_message", StoredText, nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=False),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Index("ix_webhook_executions_worker_created", "worker_id", "created_at"),
)

schedule_runs = sa.Table(
    "schedule_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("schedule_id", sa.ForeignKey("schedules.id"), nullable=False),
    sa.Column("worker_id", sa.ForeignKey("workers.id"), nullable=False),
    # The task the firing started; NULL when it was skipped (`skip_reason` says why).
    sa.Column("task_key", sa.ForeignKey("tasks.key"), nullable=True),
    sa.Column("task_id", sa.String(128), nullable=True),
    sa.Column("scheduled_for", EpochMillis, nullable=False),
    sa.Column("fired_at", EpochMillis, nullable=False),
    sa.Column("manual", sa.Boolean, nullable=False),
    sa.Column("skip_reason", StoredText, nullable=True),
    sa.Index("ix_schedule_runs_schedule_fired", "schedule_id", "fired_at"),
)

turn_steps = sa.Table(
    "turn_steps",
    metadata,
    sa.Column("turn_id", sa.ForeignKey("turns.id"), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("messages", sa.LargeBinary, nullable=False),
    sa.Column("state", JSON, nullable=True),
    sa.Column("created_at", EpochMillis, nullable=False),
)
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("worker_id", sa.ForeignKey("workers.id"), nullable=False),
    sa.Column("organization_id", sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("task_key", sa.ForeignKey("tasks.key"), nullable=False),
    sa.Column("turn_id", sa.String(32), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    # Rendered at the first attempt and kept, so every retry sends the same message.
    sa.Column("body", StoredText, nullable=True),
    # Where it is on its way lives on its job (kind "webhook", ref = this id).
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Index("ix_webhook_deliveries_worker_id", "worker_id"),
)

# Every mail a task sent or received, so that a reply naming one of them (`In-Reply-To`,
# `References`) finds its task. `turn_id` is the turn an inbound mail started, or the turn an
# outbound reply answers.
email_messages = sa.Table(
    "email_messages",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("message_id", sa.String(998), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("worker_id", sa.ForeignKey("workers.id"), nullable=False),
    sa.Column("task_key", sa.ForeignKey("tasks.key"), nullable=False),
    sa.Column("turn_id", sa.String(32), nullable=False),
    sa.Column("address", sa.String(320), nullable=False),
    sa.Column("subject", StoredText, nullable=False),
    sa.Column("references", StoredText, nullable=False),
    sa.Column("created_at", EpochMillis, nullable=False),
    sa.Index("ix_email_messages_message_id", "message_id"),
    sa.Index("ix_email_messages_turn_id", "turn_id"),
)

email_outbox = sa.Table(
    "email_outbox",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("worker_id", sa.ForeignKey("workers.id"), nullable=False),
    # The reply's task and turn; NULL for a bounce, whose `body` is written when it is queued.
    sa.Column("task_key", sa.ForeignKey("tasks.key"), nullable=True),
    sa.Column("turn_id", sa.String(32), nullable=True),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("subject", StoredText, nullable=False),
    sa.Column("in_reply_to", sa.String(998), nullable=True),
    sa.Column("references", StoredText, nullable=False),
    sa.Column("body", StoredText, nullable=True),
    sa.Column("files", JSON, nullable=False),
    # Where it is on its way lives on its job (kind "mail", ref = this id).
    sa.Column("created_at", EpochMillis, nullable=False),
)
