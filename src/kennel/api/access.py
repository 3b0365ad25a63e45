"""The access log: one line per HTTP request on the `kennel.access` logger, never a secret.

`GET /api/workers?page=2 200 12ms key=hdg_ab12…`: method, path and query as sent, status,
duration and the API key's shown prefix. The line is written when the response ends, so a
stream's line comes when the stream closes and its duration is the whole stream's.
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import quote, unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kennel.services.auth import KEY_PREFIX, shown_key

logger = logging.getLogger("kennel.access")

# Query parameters whose values are credentials by their name (`?token=`, `?api_key=`...).
_SECRET_NAMES = re.compile(
    r"token|key|secret|passw|signature|^sig$|auth|session|code|credential", re.IGNORECASE
)
_SECRET_VALUES = (KEY_PREFIX, "whk_")
MASK = "…"


class AccessLog:
    """ASGI middleware writing the access log (uvicorn's own is off, so one line a request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # No status means the app raised first: the server answers 500 for it.
            logger.info(
                "%s %s %d %dms key=%s",
                scope["method"],
                _target(scope),
                status or 500,
                (time.perf_counter() - started) * 1000,
                shown_key(_header(scope, b"authorization")),
            )


def _target(scope: Scope) -> str:
    """Path and query as the client sent them (still percent-encoded, so a line stays one
    line), with the values of secret-looking query parameters masked."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{masked_query(query)}" if query else path


def masked_query(query: str) -> str:
    """`a=1&token=abc` → `a=1&token=…`: values named like credentials, or shaped like Kennel's
    keys and webhook tokens, are replaced."""
    parts = []
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        decoded = unquote_plus(value)
        if sep and (_SECRET_NAMES.search(unquote_plus(name)) or decoded.startswith(_SECRET_VALUES)):
            value = MASK
        parts.append(f"{name}{sep}{value}")
    return "&".join(parts)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
