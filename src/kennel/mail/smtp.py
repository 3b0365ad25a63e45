"""The SMTP listener (aiosmtpd) on the server's own event loop: unknown recipients are refused
at RCPT, oversized mail at DATA, and a mail is acknowledged only once its turn is stored."""

from __future__ import annotations

import asyncio
import logging
import weakref

from aiosmtpd.smtp import SMTP, Envelope, Session

from kennel.config import Settings
from kennel.errors import KennelError, ModelNotConfiguredError, PayloadTooLargeError
from kennel.mail.messages import parse
from kennel.services.mail import InboundMail, MailService

logger = logging.getLogger(__name__)

OK = "250 2.0.0 OK"
TRY_LATER = "451 4.3.0 Temporary failure, please try again later"


class SmtpGateway:
    """Listens on `KENNEL_SMTP_HOST:KENNEL_SMTP_PORT` while started."""

    def __init__(self, mail: MailService, settings: Settings) -> None:
        self._handler = _Handler(mail, settings.email_domain)
        self._settings = settings
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, for port 0)."""
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self._settings
        self._server = await loop.create_server(
            self._session, settings.smtp_host, settings.smtp_port or 0
        )
        logger.info("e-mail: listening for SMTP on %s:%d", settings.smtp_host, self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        self._server = None

    def _session(self) -> SMTP:
        session = SMTP(
            self._handler,
            data_size_limit=self._settings.smtp_max_bytes,
            hostname=self._settings.email_domain,
            ident="Kennel",
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(session)
        return session


class _Handler:
    """aiosmtpd's hooks; each answers with an SMTP reply line."""

    def __init__(self, mail: MailService, domain: str) -> None:
        self._mail = mail
        self._domain = domain

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            recipient = await self._mail.recipient(address)
        except Exception:
            logger.exception("e-mail: could not look up recipient %s", address)
            return TRY_LATER
        if recipient is None:
            return f"550 5.1.1 <{_clean(address)}>: no such worker or task here"
        envelope.rcpt_tos.append(address)
        return OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            return "554 5.6.0 Unreadable message"
        # aiosmtpd keeps the null return path of a bounce as "<>".
        return_path = (envelope.mail_from or "").strip().removeprefix("<").removesuffix(">")
        mail = parse(raw, return_path, self._domain)
        answers = [await self._deliver(mail, address) for address in envelope.rcpt_tos]
        accepted = [answer for answer in answers if answer == OK]
        return OK if accepted else answers[0] if answers else "503 5.5.1 No recipients"

    async def _deliver(self, mail: InboundMail, address: str) -> str:
        try:
            recipient = await self._mail.recipient(address)
            if recipient is None:  # deleted since RCPT
                return f"550 5.1.1 <{_clean(address)}>: no such worker or task here"
            await self._mail.receive(mail, recipient)
        except ModelNotConfiguredError as error:
            return f"451 4.3.0 {_clean(error.message)}"
        except KennelError as error:
            code = "552 5.3.4" if isinstance(error, PayloadTooLargeError) else "550 5.7.1"
            logger.info("e-mail: refused mail %s to %s: %s", mail.message_id, address, error)
            return f"{code} {_clean(error.message)}"
        except Exception:
            logger.exception("e-mail: could not take mail %s to %s", mail.message_id, address)
            return TRY_LATER
        return OK


def _clean(text: str) -> str:
    """One safe line of an SMTP reply."""
    return " ".join(text.split())[:200]
