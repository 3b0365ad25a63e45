"""Domain errors. The domain knows no HTTP status: `api/errors.py` maps these to responses."""

from __future__ import annotations


class KennelError(Exception):
    """Base of every error Kennel raises on purpose; `code` is a stable machine name."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInputError(KennelError):
    code = "invalid_request"


class AuthenticationError(KennelError):
    code = "unauthorized"


class PermissionDeniedError(KennelError):
    code = "forbidden"


class NotFoundError(KennelError):
    code = "not_found"


class ConflictError(KennelError):
    code = "conflict"


class PayloadTooLargeError(KennelError):
    code = "payload_too_large"


class RateLimitedError(KennelError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CreditsExhaustedError(KennelError):
    code = "credits_exhausted"


class ModelNotConfiguredError(KennelError):
    code = "model_not_configured"


class LeaseLostError(KennelError):
    """A runner wrote for a job it no longer holds; its writes are refused."""

    code = "lease_lost"


class DatabaseInUseError(KennelError):
    """Another process already serves this SQLite database."""

    code = "database_in_use"
