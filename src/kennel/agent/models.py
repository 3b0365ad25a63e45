"""Model names (`provider:model`, spec §16.21) to pydantic-ai models; errors say what to set."""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import AsyncExitStack
from typing import Any

from pydantic_ai.exceptions import UserError
from pydantic_ai.models import Model, infer_model
from pydantic_ai.providers import Provider, infer_provider
from pydantic_ai.providers.openai import OpenAIProvider

from kennel.agent.modelhttp import model_http_client
from kennel.agent.openaisdk import skip_sdk_walks
from kennel.agent.prepared import reuse_prepared_requests
from kennel.agent.providers import (
    COMMON_PROVIDERS,
    EXAMPLE_MODEL,
    OPENAI_PROVIDERS,
    safe_url,
    split_name,
)
from kennel.agent.toolschemas import reuse_adapted_schemas
from kennel.config import Settings
from kennel.errors import InvalidInputError, ModelNotConfiguredError

logger = logging.getLogger(__name__)

# pydantic-ai speaks to library users: "... or pass it via `AnthropicProvider(api_key=...)`",
# and offers its keyless test model. Kennel's operators only have environment variables.
_LIBRARY_ADVICE = re.compile(r" or pass it via `[^`]*`| To try Pydantic AI.*$", re.DOTALL)
_OPENAI_API = "api.openai.com"


class _UnknownNameError(Exception):
    """No provider can serve the name: malformed, an unknown provider, or its library missing."""


class _MissingSettingError(Exception):
    """A provider that exists but lacks a setting (usually its API key)."""


class ModelCatalog:
    """Builds each named model once and reuses it (and its HTTP connection pool) for every run.

    The catalog owns the models' HTTP clients (the OpenAI-compatible ones on aiohttp, see
    `modelhttp`): `aclose()` releases them.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._models: dict[str, Model] = {}
        self._exits = AsyncExitStack()
        # Entering a model's client may wait; requests that come meanwhile wait for the same
        # model instead of each building its own (a burst of 500 built 500 connection pools).
        self._building = asyncio.Lock()

    def name_for(self, worker_model: str | None) -> str:
        """The model a worker runs on: its own `model`, else `KENNEL_MODEL`."""
        name = worker_model or self._settings.model
        if not name:
            raise ModelNotConfiguredError(
                "no model is configured: set KENNEL_MODEL to a pydantic-ai model name such as "
                "'openai:gpt-4.1-mini', 'anthropic:claude-sonnet-4-5' or 'openai-chat:<model>' "
                "(with OPENAI_BASE_URL) for any OpenAI-compatible server"
            )
        return name

    async def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is not None:
            return model
        async with self._building:
            model = self._models.get(name)
            if model is None:
                model = await self._exits.enter_async_context(self._build(name))
                self._models[name] = model
        return model

    async def check(self, worker_model: str | None) -> str:
        """Resolve and build the model now, so a bad setting fails the request, not the run."""
        name = self.name_for(worker_model)
        await self.get(name)
        return name

    async def check_setting(self) -> None:
        """At start: a `KENNEL_MODEL` no provider can serve raises, with the fix; one whose
        provider lacks a setting, or no `KENNEL_MODEL` at all, is a warning; the model in
        use is logged."""
        name = self._settings.model
        if not name:
            logger.warning(
                "KENNEL_MODEL is not set: tasks answer 503 (model_not_configured) unless their "
                "worker has its own model; set it to e.g. %s",
                EXAMPLE_MODEL,
            )
            return
        try:
            model = self._make(name)
        except _UnknownNameError as error:
            raise ModelNotConfiguredError(_fix_for_setting(name, str(error))) from None
        except _MissingSettingError as error:
            logger.warning(
                "KENNEL_MODEL=%s cannot be used yet: %s Until then tasks answer 503 "
                "(model_not_configured) unless their worker has its own model.",
                name,
                error,
            )
            return
        self._models[name] = await self._exits.enter_async_context(model)
        logger.info("model in use: KENNEL_MODEL=%s, %s", name, _describe(name, model))

    async def aclose(self) -> None:
        self._models.clear()
        await self._exits.aclose()

    def _build(self, name: str) -> Model:
        is_default = name == self._settings.model
        try:
            return self._make(name)
        except _UnknownNameError as error:
            if not is_default:
                # A name the caller chose: their mistake, not the server's configuration.
                raise InvalidInputError(
                    f"model {name!r} is not a model name pydantic-ai knows ({error}): use "
                    "provider:model, e.g. 'openai:gpt-4.1-mini', 'anthropic:claude-sonnet-4-5' "
                    "or 'openai-chat:<model>'",
                    code="invalid_model",
                ) from None
            message = f"KENNEL_MODEL={name!r} cannot be used: {error}"
            raise ModelNotConfiguredError(message) from None
        except _MissingSettingError as error:
            source = "KENNEL_MODEL" if is_default else "the worker's model"
            raise ModelNotConfiguredError(f"{source}={name!r} cannot be used: {error}") from None

    def _make(self, name: str) -> Model:
        provider, model_id = split_name(name)
        if provider and not model_id:
            raise _UnknownNameError(f"no model is named after '{provider}:'")
        try:
            model = infer_model(name, provider_factory=self._provider)
        except ImportError:
            raise _UnknownNameError(
                f"the library of the {provider!r} provider is not installed here"
            ) from None
        except UserError as error:
            reason = _LIBRARY_ADVICE.sub("", str(error)).strip()
            if reason.startswith("Unknown model"):
                raise _UnknownNameError(reason) from None
            raise _MissingSettingError(reason) from None
        except ValueError as error:  # "Unknown provider: x"
            raise _UnknownNameError(str(error)) from None
        reuse_adapted_schemas(model)
        reuse_prepared_requests(model)
        return model

    def _provider(self, provider_name: str) -> Provider[Any]:
        if provider_name in OPENAI_PROVIDERS:
            settings = self._settings
            http_client = model_http_client(settings.model_timeout_seconds)
            self._exits.push_async_callback(http_client.aclose)
            provider = OpenAIProvider(
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key,
                http_client=http_client,
            )
            skip_sdk_walks(provider.client)
            return provider
        return infer_provider(provider_name)


def _fix_for_setting(name: str, reason: str) -> str:
    """What `kennel serve` says before refusing to start on a `KENNEL_MODEL` no provider serves."""
    return (
        f"KENNEL_MODEL={name!r} is not a model Kennel can use: {reason}. "
        f"Set KENNEL_MODEL to provider:model, e.g. KENNEL_MODEL={EXAMPLE_MODEL} "
        "(Chat Completions, which every OpenAI-compatible server speaks; set "
        "KENNEL_OPENAI_BASE_URL for one that is not OpenAI's), openai:gpt-4.1-mini "
        "(OpenAI's Responses API) or anthropic:claude-sonnet-4-5. Known providers: "
        f"{', '.join(COMMON_PROVIDERS)} and the rest of pydantic-ai's whose library is installed."
    )


def _describe(name: str, model: Model) -> str:
    """Which API a model speaks and where, for the start-up log (no keys, no query strings)."""
    provider = split_name(name)[0]
    api = {
        "OpenAIResponsesModel": "OpenAI Responses API",
        "OpenAIChatModel": "Chat Completions API",
    }.get(type(model).__name__, f"provider {model.system}")
    where = safe_url(model.base_url) if model.base_url else "the provider's default URL"
    text = f"{api} at {where}"
    if provider == "openai" and model.base_url and _OPENAI_API not in model.base_url:
        text += " (a server that speaks only Chat Completions needs openai-chat: instead)"
    return text
