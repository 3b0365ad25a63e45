"""Why a run failed: a stable code and a message safe to show clients (with a hint at the fix
when one is known), and a fuller line for the operator's log."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelContextWindowExceededError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestTimeout,
    ModelServerError,
    ModelTimeoutError,
    ModelUnavailableError,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
)

from kennel.agent.providers import OPENAI_PROVIDERS, safe_url, split_name, variables_of
from kennel.models import TurnError

logger = logging.getLogger(__name__)

BUDGET_EXHAUSTED = "budget_exhausted"
BODY_LOGGED = 300
"""Characters of a provider's error body kept in the log line."""


def classify(error: Exception, model_name: str | None = None) -> TurnError:
    """Never leaks keys, URLs, HTTP bodies or stack traces (unexpected errors are logged
    here instead); `model_name` (`provider:model`) lets the hint name the right settings."""
    if isinstance(error, UsageLimitExceeded):
        return TurnError(BUDGET_EXHAUSTED, str(error))
    if isinstance(error, ModelAPIError):
        hint = _hint(error, model_name or "")
        if isinstance(error, ModelHTTPError):
            message = f"the model provider answered HTTP {error.status_code}"
        elif isinstance(error, ModelConnectionError | ModelRequestTimeout):
            message = "the model provider could not be reached"
        elif hint is not None:  # the hint says it in Kennel's words, not the provider's
            message = "the model provider failed"
        else:
            message = f"the model provider failed: {error.message}"
        return TurnError("provider_error", f"{message}: {hint}" if hint else message)
    if isinstance(error, UnexpectedModelBehavior):
        return TurnError("invalid_model_output", f"the model misbehaved: {error.message}")
    logger.error("turn failed", exc_info=error)
    return TurnError("internal_error", "the run failed because of an internal error")


def describe(error: Exception, model_name: str | None = None) -> str:
    """The operator's view of a failure: model, provider, request URL and HTTP status where
    known, and the start of the provider's answer. Not for clients: it names internal URLs."""
    parts = [f"model {model_name or 'unknown'}"]
    if isinstance(error, ModelAPIError):
        parts.append(f"provider {split_name(model_name or '')[0] or 'unknown'}")
        request = _request_of(error)
        if request is not None:
            parts.append(" ".join(request))
        if isinstance(error, ModelHTTPError):
            parts.append(f"HTTP {error.status_code}")
            parts.append(f"answer {str(error.body)[:BODY_LOGGED]!r}")
        else:
            root = _root_cause(error)
            reason = f"{type(root).__name__}: {root}" if root is not error else error.message
            parts.append(f"{type(error).__name__} ({reason[:BODY_LOGGED]!r})")
    else:
        parts.append(f"{type(error).__name__}: {str(error)[:BODY_LOGGED]!r}")
    return ", ".join(parts)


def _hint(error: ModelAPIError, model_name: str) -> str | None:
    """How to fix a provider failure, in words an API caller may see (settings, not values)."""
    provider, model = split_name(model_name)
    variables = variables_of(provider)
    status = getattr(error, "status_code", None)
    if isinstance(error, ModelNotFoundError) or status == 404:
        request = _request_of(error)
        path = urlsplit(request[1]).path if request is not None else ""
        if path.rstrip("/").endswith("/responses") and provider in OPENAI_PROVIDERS:
            return (
                "the server has no /responses endpoint (the OpenAI Responses API that 'openai:' "
                f"models use); for a server that speaks only Chat Completions use "
                f"'openai-chat:{model}'"
            )
        return (
            f"the provider does not know the model {model!r}, or {variables.base_url} "
            "points at the wrong server"
        )
    # pydantic-ai sorts most failures into categories; the status is the fallback for the rest.
    if isinstance(error, ModelAuthenticationError) or status in (401, 403):
        return f"the provider refused the API key: check {variables.api_key}"
    if isinstance(error, ModelQuotaExceededError) or status == 402:
        return "the provider says the account's quota or credits are spent"
    if isinstance(error, ModelRateLimitError) or status == 429:
        return "the provider is rate limiting requests; try again later"
    if isinstance(error, ModelContextWindowExceededError):
        return "the conversation no longer fits the model's context window; start a new task"
    if isinstance(error, ModelTimeoutError | ModelRequestTimeout) or status == 408:
        return "the provider did not answer in time (KENNEL_MODEL_TIMEOUT_SECONDS)"
    if isinstance(error, ModelConnectionError):
        return f"could not connect to the provider: check {variables.base_url}"
    if isinstance(error, ModelServerError | ModelUnavailableError) or (status or 0) >= 500:
        return "the provider had a problem on its side; try again later"
    return None


def _request_of(error: BaseException) -> tuple[str, str] | None:
    """Method and URL of the HTTP request behind a provider error. The provider SDKs keep the
    request on the exceptions that pydantic-ai chains as causes; they build it with httpx or
    its fork httpx2, so it is read by its attributes rather than checked by type."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            request = getattr(current, "request", None)
        except RuntimeError:  # httpx raises when an error carries no request
            request = None
        method, url = getattr(request, "method", None), getattr(request, "url", None)
        if isinstance(method, str) and url is not None:
            return method, safe_url(str(url))
        current = current.__cause__ or current.__context__
    return None


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (a refused connection, a DNS failure...)."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error
