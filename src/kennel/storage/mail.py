"""E-mail: who may write to a worker, which task a mail belongs to, and outgoing mail (each
one a job of kind `mail` in the queue)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kennel import ids
from kennel.models import Worker
from kennel.models.jobs import MAIL_JOB, Job
from kennel.models.mail import BOUNCE, REPLY, Bounce, InboundEmail, OutgoingMail, ThreadedTask
from kennel.storage.database import Database
from kennel.storage.jobs import conclude, enqueue
from kennel.storage.statements import Prebuilt
from kennel.storage.tables import email_messages, email_outbox, tasks, users, workers
from kennel.storage.wakeups import JOBS_TOPIC
from kennel.storage.workers import worker_from_row

INBOUND = "in"
OUTBOUND = "out"


class MailStore:
    def __init__(self, database: Database, max_attempts: int) -> None:
        self._db = database
        self._max_attempts = max_attempts

    async def worker(self, worker_id: str) -> Worker | None:
        """A live worker by id, whatever its organization (mail carries no API key)."""
        query = sa.select(workers).where(workers.c.id == worker_id, workers.c.deleted_at.is_(None))
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else worker_from_row(row)

    async def member(self, organization_id: str, address: str) -> str | None:
        """The id of the organization's user with that e-mail address (lower case), if any."""
        query = sa.select(users.c.id).where(
            users.c.organization_id == organization_id, sa.func.lower(users.c.email) == address
        )
        found = await self._db.read(lambda conn: conn.execute(query).scalars().first())
        return None if found is None else str(found)

    async def task_of_worker(self, worker: Worker, task_id: str) -> ThreadedTask | None:
        query = sa.select(tasks.c.id, tasks.c.archived_at).where(
            tasks.c.organization_id == worker.organization_id,
            tasks.c.id == task_id,
            tasks.c.worker_id == worker.id,
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else ThreadedTask(row.id, row.archived_at is not None)

    async def threaded_task(
        self, worker_id: str, message_ids: Sequence[str]
    ) -> ThreadedTask | None:
        """The worker's task that sent or received one of `message_ids`; the latest named wins."""
        if not message_ids:
            return None
        m = email_messages.c
        query = (
            sa.select(m.message_id, tasks.c.id, tasks.c.archived_at)
            .join(tasks, tasks.c.key == m.task_key)
            .where(m.worker_id == worker_id, m.message_id.in_(list(message_ids)))
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        found = {row.message_id: ThreadedTask(row.id, row.archived_at is not None) for row in rows}
        return next((found[i] for i in reversed(message_ids) if i in found), None)

    async def has_received(self, worker_id: str, message_id: str) -> bool:
        """Whether the worker already took this mail (a client re-sending after a lost answer)."""
        m = email_messages.c
        query = sa.select(m.id).where(
            m.worker_id == worker_id, m.message_id == message_id, m.direction == INBOUND
        )
        return await self._db.read(lambda conn: conn.execute(query).first()) is not None

    async def is_ours(self, message_id: str) -> bool:
        """Whether Kennel sent a mail with this Message-ID (so receiving it is a loop)."""
        m = email_messages.c
        query = sa.select(m.id).where(m.message_id == message_id, m.direction == OUTBOUND)
        return await self._db.read(lambda conn: conn.execute(query).first()) is not None

    async def queue_bounce(self, bounce: Bounce, now: datetime) -> None:
        def work(conn: sa.Connection) -> None:
            mail_id = ids.new_id("eml")
            conn.execute(
                email_outbox.insert().values(
                    id=mail_id,
                    kind=BOUNCE,
                    worker_id=bounce.worker_id,
                    recipient=bounce.recipient,
                    subject=bounce.subject,
                    in_reply_to=bounce.in_reply_to,
                    references=" ".join(bounce.references),
                    body=bounce.body,
                    files=[],
                    created_at=now,
                )
            )
            enqueue(conn, MAIL_JOB, mail_id, now, max_attempts=self._max_attempts)
            self._db.publish(conn, JOBS_TOPIC)

        await self._db.write(work)

    async def outgoing(self, job: Job) -> OutgoingMail | None:
        """The mail a claimed job sends; None if it is gone."""
        o = email_outbox.c
        query = (
            sa.select(email_outbox, tasks.c.id.label("task_id"))
            .outerjoin(tasks, tasks.c.key == o.task_key)
            .where(o.id == job.ref)
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else _outgoing(row, job.attempts)

    async def sent(self, job: Job, mail: OutgoingMail, message_id: str, now: datetime) -> bool:
        """Settle a sent mail's job and remember its Message-ID for the thread; False if the
        claim was lost meanwhile."""

        def work(conn: sa.Connection) -> bool:
            if not conclude(conn, job, now, None, None):
                return False
            if mail.task_key is not None and mail.turn_id is not None:
                conn.execute(
                    email_messages.insert().values(
                        message_id=message_id,
                        direction=OUTBOUND,
                        worker_id=mail.worker_id,
                        task_key=mail.task_key,
                        turn_id=mail.turn_id,
                        address=mail.recipient,
                        subject=mail.subject,
                        references=" ".join(mail.references),
                        created_at=now,
                    )
                )
            return True

        return await self._db.write(work)


def record_inbound(
    conn: sa.Connection,
    worker_id: str,
    task_key: int,
    turn_id: str,
    email: InboundEmail,
    now: datetime,
) -> None:
    """Remember the mail that started a turn (in the transaction that stores the turn): its
    thread leads back to the task, and the turn's end is answered to its author."""
    conn.execute(
        email_messages.insert().values(
            message_id=email.message_id,
            direction=INBOUND,
            worker_id=worker_id,
            task_key=task_key,
            turn_id=turn_id,
            address=email.sender,
            subject=email.subject,
            references=" ".join(email.references),
            created_at=now,
        )
    )


_ASKING_MAIL = Prebuilt(  # built once: every turn's end looks (see `kennel.storage`)
    sa.select(email_messages)
    .where(
        email_messages.c.turn_id == sa.bindparam("turn_id"),
        email_messages.c.direction == INBOUND,
    )
    .limit(1)
)


def queue_reply(
    conn: sa.Connection, turn_id: str, files: Sequence[str], now: datetime, max_attempts: int
) -> bool:
    """Queue the answer of a turn that a mail asked for, if one did (in the transaction that
    records the turn's end, so the reply goes out even if the server dies next)."""
    asked = _ASKING_MAIL.first(conn, {"turn_id": turn_id})
    if asked is None:
        return False
    mail_id = ids.new_id("eml")
    conn.execute(
        email_outbox.insert().values(
            id=mail_id,
            kind=REPLY,
            worker_id=asked.worker_id,
            task_key=asked.task_key,
            turn_id=turn_id,
            recipient=asked.address,
            subject=asked.subject,
            in_reply_to=asked.message_id,
            references=" ".join([*asked.references.split(), asked.message_id]),
            files=list(files),
            created_at=now,
        )
    )
    enqueue(conn, MAIL_JOB, mail_id, now, max_attempts=max_attempts)
    return True


def _outgoing(row: Any, attempt: int) -> OutgoingMail:
    return OutgoingMail(
        id=row.id,
        kind=row.kind,
        worker_id=row.worker_id,
        task_key=row.task_key,
        task_id=row.task_id,
        turn_id=row.turn_id,
        recipient=row.recipient,
        subject=row.subject,
        in_reply_to=row.in_reply_to,
        references=tuple(row.references.split()),
        body=row.body,
        files=tuple(row.files),
        attempt=attempt,
    )
