"""Records of e-mail: a mail that came in, the task a mail names, and mails on their way out."""

from __future__ import annotations

from dataclasses import dataclass

REPLY = "reply"
"""An outgoing mail answering a turn a mail asked for."""
BOUNCE = "bounce"
"""An outgoing mail refusing a mail that could not be taken."""


@dataclass(frozen=True, slots=True)
class ThreadedTask:
    """A task of a worker that a mail names, directly or through the thread it replies to."""

    id: str
    archived: bool


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A queued mail, as one sending attempt of its job sees it.

    A reply's text is the answer of turn `turn_id`; a bounce carries its `body`.
    """

    id: str
    kind: str
    worker_id: str
    task_key: int | None
    task_id: str | None
    turn_id: str | None
    recipient: str
    subject: str
    """The subject of the mail this one answers."""
    in_reply_to: str | None
    references: tuple[str, ...]
    body: str | None
    files: tuple[str, ...]
    """Workspace paths to attach."""
    attempt: int
    """This attempt's number, from 1."""


@dataclass(frozen=True, slots=True)
class Bounce:
    """A polite refusal of a mail, to its return path."""

    worker_id: str
    recipient: str
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    body: str


@dataclass(frozen=True, slots=True)
class InboundEmail:
    """A received mail, as much of it as its reply needs to find its way back, threaded."""

    message_id: str
    sender: str
    """Where the reply goes: the mail's author."""
    subject: str
    references: tuple[str, ...]
    """The thread before this mail (its `References`), oldest first."""
