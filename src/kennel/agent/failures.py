"""Why a run failed, as a stable code and a message safe to show clients."""

from __future__ import annotations

import logging

from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelHTTPError,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
)

from kennel.models import TurnError

logger = logging.getLogger(__name__)

BUDGET_EXHAUSTED = "budget_exhausted"


def classify(error: Exception) -> TurnError:
    """Never leaks internals or stack traces; unexpected errors are logged here instead."""
    if isinstance(error, UsageLimitExceeded):
        return TurnError(BUDGET_EXHAUSTED, str(error))
    if isinstance(error, ModelHTTPError):
        return TurnError("provider_error", f"the model provider answered HTTP {error.status_code}")
    if isinstance(error, ModelAPIError):
        return TurnError("provider_error", f"the model provider failed: {error.message}")
    if isinstance(error, UnexpectedModelBehavior):
        return TurnError("invalid_model_output", f"the model misbehaved: {error.message}")
    logger.error("turn failed", exc_info=error)
    return TurnError("internal_error", "the run failed because of an internal error")
