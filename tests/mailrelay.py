"""A local SMTP relay (aiosmtpd on 127.0.0.1, in its own thread) that keeps what it is sent,
and a sender that mails Kennel's listener with `smtplib`."""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Relayed:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Relay:
    """Keeps every mail it takes, in order."""

    port: int
    received: list[Relayed] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.received.append(Relayed(envelope.mail_from or "", envelope.rcpt_tos, message))
        return "250 OK"

    def mails(self) -> list[Relayed]:
        with self.lock:
            return list(self.received)

    def forget(self) -> None:
        """Drop what earlier tests received (the relay outlives them)."""
        with self.lock:
            self.received.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving_relay(port: int | None = None) -> Iterator[Relay]:
    relay = Relay(port or free_port())
    controller = Controller(relay, hostname=HOST, port=relay.port)
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()


def mail(
    sender: str,
    to: str,
    subject: str,
    text: str | None = "",
    *,
    html: str | None = None,
    headers: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{time.monotonic_ns()}.{id(message)}@client.test>"
    for name, value in (headers or {}).items():
        message[name] = value
    if text is not None:
        message.set_content(text)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    for name, content in (files or {}).items():
        message.add_attachment(
            content, maintype="application", subtype="octet-stream", filename=name
        )
    return message


def send(port: int, message: EmailMessage, *, envelope_from: str | None = None) -> Any:
    """Hand the message to the listener, as a mail client would (blocking: run in a thread)."""
    with smtplib.SMTP(HOST, port, timeout=30) as client:
        sender = message["From"] if envelope_from is None else envelope_from
        return client.send_message(message, from_addr=sender)
