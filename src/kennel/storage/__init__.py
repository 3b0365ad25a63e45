"""Persistence: one store whose methods are one transaction each, on SQLite or PostgreSQL.

This package is storage's front: the layers above import from here, never its modules.

Statements that every task runs are built once, at import, with `sa.bindparam` placeholders,
and run with their values as `statements.Prebuilt`: compiled once per database, then run on
the driver's cursor, without building, hashing and looking the statement up again (about 0.1 ms
of CPU a statement) and without the rest of `Connection.execute` around the driver (about
18 µs of the 25 a one-row select of 16 columns takes on SQLite). Statements of rarer paths
(listing, editing) are built where they are used, and executed by SQLAlchemy, which reads
better.
"""

from __future__ import annotations

from kennel.config import Settings
from kennel.models.jobs import TURN_JOB, DeliveryAttempts
from kennel.storage.auth import AuthStore
from kennel.storage.billing import BillingStore
from kennel.storage.database import Database, ProcessLock
from kennel.storage.events import EventStore
from kennel.storage.files import FileStore
from kennel.storage.jobs import JobStore, KindRows
from kennel.storage.keys import KeyStore
from kennel.storage.mail import MailStore
from kennel.storage.migrate import migrate
from kennel.storage.organizations import OrganizationStore
from kennel.storage.runs import RunStore
from kennel.storage.schedules import ScheduleStore
from kennel.storage.tasks import TaskStore
from kennel.storage.turns import return_turns, start_turns
from kennel.storage.usage import UsageStore
from kennel.storage.wakeups import (
    JOBS_TOPIC,
    SCHEDULES_TOPIC,
    WATCH_SECONDS,
    Subscription,
    Wakeups,
    cancel_topic,
    task_topic,
    turn_topic,
)
from kennel.storage.webhooks import WebhookStore
from kennel.storage.workers import WorkerStore


class Store:
    """Facade over the per-noun stores that share one database."""

    def __init__(self, database: Database, attempts: DeliveryAttempts | None = None) -> None:
        attempts = attempts or DeliveryAttempts()
        self.database = database
        self.auth = AuthStore(database)
        self.billing = BillingStore(database)
        self.workers = WorkerStore(database)
        self.tasks = TaskStore(database)
        self.jobs = JobStore(database, {TURN_JOB: KindRows(start_turns, return_turns)})
        self.runs = RunStore(database, attempts)
        self.events = EventStore(database)
        self.files = FileStore(database)
        self.schedules = ScheduleStore(database)
        self.webhooks = WebhookStore(database)
        self.mail = MailStore(database, attempts.mail)
        self.keys = KeyStore(database)
        self.organizations = OrganizationStore(database)
        self.usage = UsageStore(database)

    @classmethod
    def for_settings(cls, settings: Settings) -> Store:
        """The store of the configured database, queueing deliveries as the settings say."""
        attempts = DeliveryAttempts(settings.webhook_max_attempts, settings.smtp_max_attempts)
        return cls(Database(settings.resolved_database_url), attempts)

    async def migrate(self) -> bool:
        """Bring the schema up to date; True when the database was new (had no schema)."""
        return await migrate(self.database)

    async def close(self) -> None:
        await self.database.close()


__all__ = [
    "JOBS_TOPIC",
    "SCHEDULES_TOPIC",
    "WATCH_SECONDS",
    "Database",
    "ProcessLock",
    "Store",
    "Subscription",
    "Wakeups",
    "cancel_topic",
    "migrate",
    "task_topic",
    "turn_topic",
]
