"""The guard around every API request: URLs no handler should see are refused, and an unexpected
exception answers a JSON 500 while the connection stays open.

Starlette hands exceptions to `ServerErrorMiddleware`, which answers and then re-raises them so
the server can log them; uvicorn then closes the keep-alive connection under the client, which
sees a dropped connection instead of the 500 it was just sent. This guard answers and returns.
Once a response has started, its status line is gone: the exception is re-raised, and closing
the connection is then the only honest end of a body that will never be finished.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kennel.api.errors import error_response

logger = logging.getLogger(__name__)


class RequestGuard:
    """ASGI middleware, installed inside CORS so that its answers carry CORS headers too."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if _has_nul(scope):
            # PostgreSQL refuses NUL in text: an id or a filter holding one would fail in the
            # database instead of being a plain "not found".
            refusal = error_response(400, "the URL contains a NUL character (%00)", "invalid_url")
            await refusal(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, watched)
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as error:
            if started:
                raise
            logger.error(
                "unhandled error in %s %s", scope.get("method"), scope.get("path"), exc_info=error
            )
            answer = JSONResponse(
                {"error": "internal server error", "code": "internal_error"}, status_code=500
            )
            await answer(scope, receive, send)


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"%00" in query
