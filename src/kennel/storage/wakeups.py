"""Wake-ups between writers and waiters: in-process always, across processes on PostgreSQL.

A waiter subscribes *before* it reads the database and waits *after*, so a commit that lands
between the read and the wait is never missed. Waiters still poll with a timeout: a wake-up
is a hint that saves latency, never the only way to see new rows.

Each notification names the process that sent it, which ignores its own: it woke its waiters
when its transaction committed.

A process also tells the others what it is watching (`watching`, on PostgreSQL): a run
streams its chunks as they come only while someone may be following its task, in whichever
process that reader is.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import sqlalchemy as sa

from kennel.flags import Flag

logger = logging.getLogger(__name__)

CHANNEL = "kennel"
WATCHING = "watching:"
"""A notification's topic starting with this names a topic some process's reader follows."""
WATCH_SECONDS = 5.0
"""A reader says again that it is watching this often; it counts as gone after twice that."""
_WATCHED_FOR = 2 * WATCH_SECONDS


class Subscription:
    __slots__ = ("_flag", "_wakeups", "topics")

    def __init__(self, wakeups: Wakeups) -> None:
        self._flag = Flag()
        self._wakeups = wakeups
        self.topics: list[str] = []

    def add(self, topic: str) -> None:
        """Be woken by `topic` too, for as long as the subscription lasts."""
        self._wakeups._subscribers[topic].add(self)
        self.topics.append(topic)

    def _set(self) -> None:
        self._flag.set()

    async def wait(self, seconds: float) -> bool:
        """True if woken, False after `seconds`; either way the next wait needs a new signal."""
        try:
            async with asyncio.timeout(seconds):
                await self._flag.wait()
        except TimeoutError:
            return False
        finally:
            self._flag.clear()
        return True


class Wakeups:
    def __init__(self) -> None:
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._watched_elsewhere: dict[str, float] = {}
        """Topics other processes said they watch, with when they last said so."""
        self._forgot_at = time.monotonic()
        self._listener: Any = None
        self.origin = secrets.token_hex(8)
        """Names this process in its notifications."""

    @contextmanager
    def subscribe(self, topic: str) -> Iterator[Subscription]:
        """One subscription to `topic` (and to those `Subscription.add` adds), while it lasts."""
        subscription = Subscription(self)
        subscription.add(topic)
        try:
            yield subscription
        finally:
            for added in subscription.topics:
                subscribers = self._subscribers[added]
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[added]

    def is_watched(self, topic: str) -> bool:
        """Whether a reader in this process subscribes to `topic`, or one in another process
        said it watches `topic` within the last two `WATCH_SECONDS`."""
        if topic in self._subscribers:
            return True
        said = self._watched_elsewhere.get(topic)
        return said is not None and time.monotonic() - said < _WATCHED_FOR

    def publish_local(self, topic: str) -> None:
        for subscription in self._subscribers.get(topic, ()):
            subscription._set()

    async def listen(self, database_url: str) -> None:
        """Relay PostgreSQL notifications from other processes (and this one) to local waiters."""
        import asyncpg  # only PostgreSQL needs it; SQLite processes never load it

        url = sa.engine.make_url(database_url).set(drivername="postgresql")
        self._listener = await asyncpg.connect(url.render_as_string(hide_password=False))
        await self._listener.add_listener(CHANNEL, self._on_notification)

    def payload(self, topics: Iterable[str]) -> str:
        """A notification of `topics` from this process."""
        return f"{self.origin}|{','.join(topics)}"

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        origin, _, topics = payload.rpartition("|")
        if origin == self.origin:
            return
        for topic in topics.split(","):
            if topic.startswith(WATCHING):
                self._heard_watching(topic.removeprefix(WATCHING))
            else:
                self.publish_local(topic)

    def _heard_watching(self, topic: str) -> None:
        now = time.monotonic()
        if now - self._forgot_at >= _WATCHED_FOR:  # forget readers gone, once in a while
            self._forgot_at = now
            self._watched_elsewhere = {
                known: said
                for known, said in self._watched_elsewhere.items()
                if now - said < _WATCHED_FOR
            }
        self._watched_elsewhere[topic] = now

    async def close(self) -> None:
        if self._listener is not None:
            with suppress(Exception):
                await self._listener.close()
            self._listener = None


def task_topic(task_key: int) -> str:
    """Every change to a task's event log."""
    return f"task:{task_key}"


def turn_topic(turn_id: str) -> str:
    """A turn has ended."""
    return f"turn:{turn_id}"


def cancel_topic(turn_id: str) -> str:
    """The turn was cancelled: whichever process runs it stops it."""
    return f"cancel:{turn_id}"


JOBS_TOPIC = "jobs"
"""Published when a job is queued, or a running one ends or goes back (the next turn of its
task may start): the runners wake up."""

SCHEDULES_TOPIC = "schedules"
"""Published when a schedule is created, cancelled or stopped: the scheduler re-reads when the
next one is due."""
