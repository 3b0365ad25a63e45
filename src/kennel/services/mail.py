"""Workers reachable by e-mail (spec §16.6): who may write, which task a mail starts or
continues, and which mails are ignored so that two robots never answer each other forever."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath

from kennel import ids
from kennel.clock import Clock
from kennel.config import Settings
from kennel.errors import InvalidInputError
from kennel.files.workspace import Upload, safe_relative_path
from kennel.models import Principal, TriggeredBy, Worker
from kennel.models.mail import Bounce, InboundEmail
from kennel.services.tasks import TaskRequest, TaskService
from kennel.storage import Store

logger = logging.getLogger(__name__)

EMAIL_KEY_ID = "email"
"""`Principal.key_id` of work asked for by mail (no API key is involved)."""
_DAEMONS = frozenset({"mailer-daemon", "postmaster"})
_BULK = frozenset({"bulk", "junk", "list"})


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    media_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class InboundMail:
    """A received mail, as the SMTP listener parsed it."""

    return_path: str
    """The envelope sender (`MAIL FROM`); empty for bounces."""
    sender: str
    """The author (`From`), lower case."""
    message_id: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    text: str
    """The plain-text body (HTML converted) without quoted history."""
    attachments: tuple[Attachment, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers that mark automatic mail, by lower-case name."""


@dataclass(frozen=True, slots=True)
class MailRecipient:
    """A worker's address: `<workerId>@domain`, or `<workerId>+<taskId>@domain` for a task."""

    worker: Worker
    task_id: str | None


class Outcome(StrEnum):
    STARTED = "started"
    CONTINUED = "continued"
    BOUNCED = "bounced"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Receipt:
    outcome: Outcome
    task_id: str | None = None


class MailService:
    def __init__(self, store: Store, tasks: TaskService, clock: Clock, settings: Settings) -> None:
        self._store = store
        self._tasks = tasks
        self._clock = clock
        self._domain = settings.email_domain.lower()

    async def recipient(self, address: str) -> MailRecipient | None:
        """The worker (and task) an address names; None if it names none of ours."""
        local, _, domain = address.strip().rpartition("@")
        if domain.lower() != self._domain or not local:
            return None
        worker_id, plus, task_id = local.partition("+")
        worker = await self._store.mail.worker(worker_id)
        if worker is None:
            return None
        if not plus:
            return MailRecipient(worker, None)
        task = await self._store.mail.task_of_worker(worker, task_id)
        if task is None or task.archived:
            return None
        return MailRecipient(worker, task.id)

    async def receive(self, mail: InboundMail, recipient: MailRecipient) -> Receipt:
        """Start or continue a task with the mail, bounce it, or ignore it (automatic mail)."""
        worker = recipient.worker
        reason = await self._automatic(mail)
        if reason is None and await self._store.mail.has_received(worker.id, mail.message_id):
            reason = "already received"
        if reason is not None:
            logger.info("ignored mail %s to %s: %s", mail.message_id, worker.id, reason)
            return Receipt(Outcome.IGNORED)
        principal = await self._principal(worker, mail.sender)
        if principal is None:
            await self._bounce(mail, worker)
            return Receipt(Outcome.BOUNCED)
        task_id = recipient.task_id
        if task_id is None:
            thread = [*mail.references, *mail.in_reply_to]
            task = await self._store.mail.threaded_task(worker.id, thread)
            task_id = task.id if task is not None and not task.archived else None
        submitted = await self._tasks.submit(principal, self._request(mail, worker, task_id))
        if task_id is not None:
            return Receipt(Outcome.CONTINUED, task_id)
        started = submitted.task.id
        logger.info("mail %s from %s started task %s", mail.message_id, mail.sender, started)
        return Receipt(Outcome.STARTED, started)

    def _request(self, mail: InboundMail, worker: Worker, task_id: str | None) -> TaskRequest:
        uploads = [
            Upload(attachment_name(a.filename, n), a.media_type, io.BytesIO(a.content))
            for n, a in enumerate(mail.attachments, start=1)
        ]
        follow_up = task_id is not None
        return TaskRequest(
            input=task_input(mail, follow_up=follow_up),
            task_id=task_id or ids.task_id(),
            worker_id=worker.id,
            triggered_by=TriggeredBy.EMAIL,
            metadata={} if follow_up else {"emailFrom": mail.sender, "emailSubject": mail.subject},
            uploads=uploads,
            email=InboundEmail(mail.message_id, mail.sender, mail.subject, mail.references),
        )

    async def _principal(self, worker: Worker, sender: str) -> Principal | None:
        """Who the work is done for: the member who wrote, or the worker's creator on behalf
        of an allow-listed address; None if the sender may not write to this worker."""
        user_id = await self._store.mail.member(worker.organization_id, sender)
        if user_id is not None:
            member = Principal(worker.organization_id, user_id, EMAIL_KEY_ID)
            if worker.is_visible_to(member):
                return member
        if is_allowed(sender, worker.email_allow_list):
            return Principal(worker.organization_id, worker.user_id, EMAIL_KEY_ID)
        return None

    async def _automatic(self, mail: InboundMail) -> str | None:
        """Why a mail must not be answered (RFC 3834: automatic mail, bounces, our own mail)."""
        headers = mail.headers
        return_path = mail.return_path.lower()
        if not return_path or return_path.partition("@")[0] in _DAEMONS:
            return "a delivery report (empty or MAILER-DAEMON return path)"
        if mail.sender.partition("@")[0] in _DAEMONS:
            return "a delivery report (from MAILER-DAEMON)"
        if headers.get("auto-submitted", "no").split(";")[0].strip().lower() != "no":
            return "automatic (Auto-Submitted)"
        if headers.get("precedence", "").strip().lower() in _BULK:
            return "bulk or list mail (Precedence)"
        if "x-autoreply" in headers or "x-autorespond" in headers:
            return "an auto-reply"
        if self._domain in (_domain_of(mail.sender), _domain_of(return_path)):
            return "sent from Kennel's own domain"
        if await self._store.mail.is_ours(mail.message_id):
            return "one of Kennel's own mails"
        return None

    async def _bounce(self, mail: InboundMail, worker: Worker) -> None:
        logger.warning(
            "refused mail %s from %s to worker %s: not a member of its organization "
            "nor on its e-mail allow-list",
            mail.message_id,
            mail.sender,
            worker.id,
        )
        bounce = Bounce(
            worker_id=worker.id,
            recipient=mail.return_path,
            subject=mail.subject,
            in_reply_to=mail.message_id,
            references=(*mail.references, mail.message_id),
            body=bounce_text(worker, mail, f"{worker.id}@{self._domain}"),
        )
        await self._store.mail.queue_bounce(bounce, self._clock.now())


def is_allowed(sender: str, allow_list: tuple[str, ...]) -> bool:
    return sender in allow_list or f"@{_domain_of(sender)}" in allow_list


def attachment_name(filename: str, number: int) -> str:
    """A workspace file name for an attachment: its own base name, when it is a safe one."""
    name = PurePosixPath(filename.replace("\\", "/")).name.strip()
    try:
        return safe_relative_path(name)
    except InvalidInputError:
        return f"attachment-{number}"


def task_input(mail: InboundMail, *, follow_up: bool) -> str:
    """The turn's input: subject and text (a reply's subject only repeats the thread's).

    Attachments are the turn's files, not part of its text: the model's prompt names them
    as it does API uploads.
    """
    parts = [] if follow_up and mail.text else [mail.subject]
    parts.append(mail.text)
    return "\n\n".join(part for part in parts if part.strip()) or "(an empty e-mail)"


def bounce_text(worker: Worker, mail: InboundMail, address: str) -> str:
    return (
        "Hello,\n\n"
        f"This is an automatic answer from {worker.title} <{address}>.\n\n"
        f'Your message "{mail.subject}" was not delivered: only members of this worker\'s '
        "organization, and addresses its owner has allowed, may write to it.\n\n"
        f"If you should be able to, ask the worker's owner to add {mail.sender} to its "
        "e-mail allow-list.\n"
    )


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()
