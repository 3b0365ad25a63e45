"""Outgoing mail: each answer of a mailed turn (and each bounce) goes out through the relay at
least once, threaded, with the files the turn wrote; failed attempts are retried with backoff."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from kennel.clock import Clock
from kennel.config import Settings, SmtpRelay
from kennel.errors import InvalidInputError
from kennel.files.workspace import Workspaces, download_url, media_type_for
from kennel.models import TaskStatus, Turn, Worker
from kennel.models.jobs import MAIL_JOB, Job
from kennel.models.mail import REPLY, OutgoingMail
from kennel.services.backoff import backoff_seconds
from kennel.services.jobs import Attempt
from kennel.storage import Store

logger = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 6 * 3600.0
_ATOM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True, slots=True)
class _Failure:
    error: str
    permanent: bool


@dataclass(frozen=True, slots=True)
class _Mailing:
    """The mail an attempt was about, and its Message-ID once it went out."""

    mail: OutgoingMail
    message_id: str | None = None


class Mailer:
    """The `mail` kind of job: one attempt at sending a queued mail through the relay."""

    kind = MAIL_JOB
    cut_short_on_stop = False

    def __init__(
        self,
        store: Store,
        workspaces: Workspaces,
        clock: Clock,
        settings: Settings,
        relay: SmtpRelay,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._workspaces = workspaces
        self._clock = clock
        self._settings = settings
        self._relay = relay
        self._domain = settings.email_domain.lower()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)

    def backoff(self, attempt: int) -> float:
        first = self._settings.smtp_retry_seconds
        return backoff_seconds(attempt, first=first, most=RETRY_MAX_SECONDS, rng=self._rng)

    async def attempt(self, job: Job) -> Attempt[_Mailing]:
        mail = await self._store.mail.outgoing(job)
        if mail is None:
            return Attempt(error="the mail is gone", final=True)
        worker = await self._store.mail.worker(mail.worker_id)
        if worker is None:
            return Attempt(error="the worker was deleted", final=True, record=_Mailing(mail))
        message = await self._compose(worker, mail)
        failure = await self._send(self._relay, mail, message)
        if failure is not None:
            return Attempt(error=failure.error, final=failure.permanent, record=_Mailing(mail))
        return Attempt(record=_Mailing(mail, message["Message-ID"]))

    async def settle(
        self, job: Job, attempt: Attempt[_Mailing], retry_at: datetime | None, now: datetime
    ) -> bool:
        """A sent mail is remembered for its thread; a failed one is tried again or given up."""
        mailing = attempt.record
        if mailing is not None and mailing.message_id is not None:
            return await self._store.mail.sent(job, mailing.mail, mailing.message_id, now)
        logger.info(
            "mail %s to %s, attempt %d: %s%s",
            job.ref,
            mailing.mail.recipient if mailing else "(unknown)",
            job.attempts,
            attempt.error,
            f"; next attempt at {retry_at.isoformat()}" if retry_at else "; giving up",
        )
        return await self._store.jobs.conclude(job, now, attempt.error, retry_at)

    async def _compose(self, worker: Worker, mail: OutgoingMail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = Address(worker.title, addr_spec=self._address(worker, mail))
        message["To"] = mail.recipient
        message["Subject"] = reply_subject(mail.subject)
        message["Date"] = format_datetime(self._clock.now())
        message["Message-ID"] = f"<{mail.id}@{self._domain}>"
        if mail.in_reply_to:
            message["In-Reply-To"] = mail.in_reply_to
        if mail.references:
            message["References"] = " ".join(mail.references)
        # RFC 3834: marks the mail as an automatic answer, so well-behaved robots don't answer.
        message["Auto-Submitted"] = "auto-replied"
        if mail.kind != REPLY or mail.turn_id is None:
            message.set_content(mail.body or "")
            return message
        turn = await self._store.tasks.get_turn(mail.turn_id)
        files, notes = await self._files(worker, mail)
        message.set_content(answer_text(turn) + "".join(f"\n\n{note}" for note in notes))
        for path, content in files:
            maintype, _, subtype = media_type_for(path).partition("/")
            message.add_attachment(content, maintype=maintype, subtype=subtype, filename=path)
        return message

    async def _files(
        self, worker: Worker, mail: OutgoingMail
    ) -> tuple[list[tuple[str, bytes]], list[str]]:
        """The turn's files to attach (as many as the size limit allows), and notes on others."""
        room = self._settings.smtp_max_bytes * 3 // 4  # base64 makes attachments a third larger
        files: list[tuple[str, bytes]] = []
        notes: list[str] = []
        for path in mail.files:
            try:
                location = self._workspaces.resolve(worker.organization_id, worker.id, path)
                content = await asyncio.to_thread(location.read_bytes)
            except (OSError, InvalidInputError):
                notes.append(f"({path} no longer exists in the workspace.)")
                continue
            if len(content) > room:
                url = download_url(self._settings.base_url, worker.id, path)
                notes.append(f"({path} is too large to attach: {url})")
                continue
            room -= len(content)
            files.append((path, content))
        return files, notes

    def _address(self, worker: Worker, mail: OutgoingMail) -> str:
        """`<workerId>+<taskId>@domain`, so that a plain reply continues the task."""
        task_id = mail.task_id
        if task_id and set(task_id) <= _ATOM:
            return f"{worker.id}+{task_id}@{self._domain}"
        return f"{worker.id}@{self._domain}"

    async def _send(
        self, relay: SmtpRelay, mail: OutgoingMail, message: EmailMessage
    ) -> _Failure | None:
        # A bounce has an empty return path (RFC 5321 §4.5.5): nothing ever answers it.
        envelope_from = "" if mail.kind != REPLY else str(message["From"].addresses[0].addr_spec)
        import aiosmtplib  # by the first mail sent: a server that mails nothing never loads it

        client = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            use_tls=relay.security == "tls",
            start_tls=relay.security == "starttls",
            username=relay.username,
            password=relay.password,
            timeout=self._settings.smtp_timeout_seconds,
            local_hostname=self._domain,
        )
        try:
            async with asyncio.timeout(2 * self._settings.smtp_timeout_seconds), client:
                await client.sendmail(envelope_from, [mail.recipient], message.as_bytes())
        except aiosmtplib.SMTPRecipientsRefused as error:
            refused = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
            return _Failure(f"the relay refused the recipient: {refused}", permanent=True)
        except aiosmtplib.SMTPResponseException as error:
            return _Failure(f"the relay answered {error.code} {error.message}", error.code >= 500)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return _Failure(f"could not reach the relay: {error or type(error).__name__}", False)
        return None


def reply_subject(subject: str) -> str:
    subject = " ".join(subject.split())
    return subject if subject.lower().startswith("re:") else f"Re: {subject}".rstrip()


def answer_text(turn: Turn | None) -> str:
    """The turn's answer as mail text: its output, or its structured output as JSON."""
    if turn is None:
        return "(The task this answers no longer exists.)"
    if turn.status is TaskStatus.ERROR:
        reason = turn.error.message if turn.error else "an unknown error"
        return f"Sorry, I could not finish this task: {reason}"
    if turn.status is TaskStatus.ABORTED:
        return "This task was stopped before it finished."
    if turn.structured_output is not None:
        return json.dumps(turn.structured_output, indent=2, ensure_ascii=False)
    return turn.output_text or "(No answer.)"
