"""Persistence: one store whose methods are one transaction each, on SQLite or PostgreSQL."""

from __future__ import annotations

from kennel.storage.auth import AuthStore
from kennel.storage.database import Database
from kennel.storage.events import EventStore
from kennel.storage.files import FileStore
from kennel.storage.keys import KeyStore
from kennel.storage.mail import MailStore
from kennel.storage.migrate import migrate
from kennel.storage.organizations import OrganizationStore
from kennel.storage.runs import ExpiredJob, RunStore
from kennel.storage.schedules import ScheduleStore
from kennel.storage.tasks import TaskSnapshot, TaskStore
from kennel.storage.usage import UsageStore
from kennel.storage.webhooks import WebhookStore
from kennel.storage.workers import WorkerStore


class Store:
    """Facade over the per-noun stores that share one database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.auth = AuthStore(database)
        self.workers = WorkerStore(database)
        self.tasks = TaskStore(database)
        self.runs = RunStore(database)
        self.events = EventStore(database)
        self.files = FileStore(database)
        self.schedules = ScheduleStore(database)
        self.webhooks = WebhookStore(database)
        self.mail = MailStore(database)
        self.keys = KeyStore(database)
        self.organizations = OrganizationStore(database)
        self.usage = UsageStore(database)

    async def migrate(self) -> bool:
        """Bring the schema up to date; True when the database was new (had no schema)."""
        return await migrate(self.database)

    async def close(self) -> None:
        await self.database.close()


__all__ = ["Database", "ExpiredJob", "Store", "TaskSnapshot"]
