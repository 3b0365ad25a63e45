"""Errors on the wire (spec §16.9): `{"error": message, "code": machine_code}`, never a trace."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from kennel.errors import (
    AuthenticationError,
    ConflictError,
    CreditsExhaustedError,
    InvalidInputError,
    KennelError,
    LeaseLostError,
    ModelNotConfiguredError,
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
    (ModelNotConfiguredError, 503),
    (LeaseLostError, 503),
]
# The SDKs retry 409, 429 and 5xx; say so only where a retry can help (spec §1.7).
_RETRYABLE = frozenset({429})


def error_response(status: int, message: str, code: str) -> JSONResponse:
    headers = {} if status in _RETRYABLE else {"x-should-retry": "false"}
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def status_for(error: KennelError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def describe_validation(error: ValidationError | RequestValidationError) -> str:
    """The first problems of a validation error, as `field: message` phrases."""
    phrases = []
    for problem in error.errors()[:5]:
        location = ".".join(str(step) for step in problem["loc"] if step not in ("body", "query"))
        message = problem["msg"]
        phrases.append(f"{location}: {message}" if location else message)
    return "; ".join(phrases) or "invalid request"


async def _kennel_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, KennelError)
    response = error_response(status_for(error), error.message, error.code)
    if isinstance(error, RateLimitedError):
        response.headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    return response


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError | ValidationError)
    return error_response(400, describe_validation(error), "invalid_request")


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        error.status_code, str(error.detail), codes.get(error.status_code, "http_error")
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(KennelError, _kennel_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
