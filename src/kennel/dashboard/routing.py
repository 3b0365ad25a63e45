"""Dashboard routes answer in HTML: a domain error is a page saying what went wrong, and a
missing session is the sign-in form, which then comes back to the page that was asked for."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from kennel.dashboard.deps import SignInRequiredError
from kennel.dashboard.render import page
from kennel.errors import (
    AuthenticationError,
    ConflictError,
    CreditsExhaustedError,
    InvalidInputError,
    KennelError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
)

_STATUS: list[tuple[type[KennelError], int]] = [
    (InvalidInputError, 400),
    (AuthenticationError, 401),
    (CreditsExhaustedError, 402),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (PayloadTooLargeError, 413),
    (RateLimitedError, 429),
]


def status_for(error: KennelError) -> int:
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 503)


def local_path(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def sign_in_page(
    request: Request,
    message: str | None = None,
    status_code: int = 401,
    target: str | None = None,
) -> Response:
    """The sign-in form, in place of the page asked for (a form post goes back to its page)."""
    if target is None and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    elif target is None:
        referer = request.headers.get("referer", "")
        target = "/" + referer.split("://", 1)[-1].partition("/")[2]
    return page(
        request,
        "signin.html",
        status_code=status_code,
        next=local_path(target),
        message=message,
        title="Sign in",
    )


class DashboardRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequiredError:
                return sign_in_page(request)
            except KennelError as error:
                return error_page(request, status_for(error), error.message)
            except RequestValidationError:
                return error_page(request, 400, "the request is missing a value or has a bad one")

        return answer


def error_page(request: Request, status_code: int, message: str) -> Response:
    titles = {404: "Not found", 403: "Not allowed", 409: "Not now"}
    title = titles.get(status_code, "Something is wrong")
    return page(request, "error.html", status_code=status_code, title=title, message=message)
