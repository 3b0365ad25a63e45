"""Received mail → `InboundMail`: addresses, thread ids, plain text without quoted history,
attachments."""

from __future__ import annotations

import re
import secrets
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses

import html2text
from mailparser_reply import EmailReplyParser

from kennel.services.mail import Attachment, InboundMail

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_AUTOMATIC_HEADERS = ("auto-submitted", "precedence", "x-autoreply", "x-autorespond")
# Reply headers ("On ... wrote:", "Am ... schrieb:", Outlook's "-----Original Message-----")
# in the languages the reply parser knows.
_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pl", "sv", "da", "cs"]
_OUTLOOK = re.compile(r"^\s*-{2,}\s*Original Message\s*-{2,}\s*$", re.IGNORECASE | re.MULTILINE)


def parse(raw: bytes, return_path: str, domain: str) -> InboundMail:
    """Parse a received mail; `domain` names the Message-ID given to a mail without one."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # policy.default builds EmailMessage objects
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if isinstance(body, EmailMessage):
        content = _text_of(body)
        text = html_to_text(content) if body.get_content_subtype() == "html" else content
    message_ids = _MESSAGE_ID.findall(_header(message, "message-id"))
    return InboundMail(
        return_path=return_path,
        sender=_address(message),
        message_id=message_ids[0] if message_ids else f"<{secrets.token_hex(12)}@{domain}>",
        in_reply_to=tuple(_MESSAGE_ID.findall(_header(message, "in-reply-to"))),
        references=tuple(_MESSAGE_ID.findall(_header(message, "references"))),
        subject=" ".join(_header(message, "subject").split()),
        text=strip_quoted(text),
        attachments=tuple(_attachments(message, body)),
        headers={name: _header(message, name) for name in _AUTOMATIC_HEADERS if name in message},
    )


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    return str(converter.handle(html))


def strip_quoted(text: str) -> str:
    """The newest part of a mail: no quoted history (`On ... wrote:` and what follows, `>`
    lines, an Outlook original message) and no signature."""
    text = text.replace("\r\n", "\n")
    outlook = _OUTLOOK.search(text)
    if outlook is not None:
        text = text[: outlook.start()]
    reply = EmailReplyParser(languages=_LANGUAGES).parse_reply(text=text) or ""
    lines = [line.rstrip() for line in reply.split("\n") if not line.lstrip().startswith(">")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _header(message: EmailMessage, name: str) -> str:
    try:
        return str(message.get(name, "") or "")
    except (ValueError, TypeError, IndexError):  # a malformed header: read as absent
        return ""


def _address(message: EmailMessage) -> str:
    found = getaddresses([_header(message, "from")])
    return found[0][1].strip().lower() if found else ""


def _text_of(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError):  # an unknown or lying charset
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _attachments(message: EmailMessage, body: object) -> list[Attachment]:
    found = []
    for part in message.walk():
        if part is body or part.is_multipart() or not isinstance(part, EmailMessage):
            continue
        filename = part.get_filename()
        if filename is None and part.get_content_disposition() != "attachment":
            continue  # another rendering of the body, not a file
        content = part.get_payload(decode=True)
        if isinstance(content, bytes):
            found.append(Attachment(filename or "", part.get_content_type(), content))
    return found
