"""Model names (`provider:model`, spec §16.21) to pydantic-ai models; errors say what to set."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from pydantic_ai.exceptions import UserError
from pydantic_ai.models import Model, infer_model
from pydantic_ai.providers import Provider, infer_provider
from pydantic_ai.providers.openai import OpenAIProvider

from kennel.config import Settings
from kennel.errors import InvalidInputError, ModelNotConfiguredError

_OPENAI_PROVIDERS = frozenset({"openai", "openai-chat", "openai-responses"})


class ModelCatalog:
    """Builds each named model once and reuses it (and its HTTP connection pool) for every run.

    The catalog owns the models' HTTP clients: `aclose()` releases them.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._models: dict[str, Model] = {}
        self._exits = AsyncExitStack()

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
        if model is None:
            model = await self._exits.enter_async_context(self._build(name))
            self._models[name] = model
        return model

    async def check(self, worker_model: str | None) -> str:
        """Resolve and build the model now, so a bad setting fails the request, not the run."""
        name = self.name_for(worker_model)
        await self.get(name)
        return name

    async def aclose(self) -> None:
        self._models.clear()
        await self._exits.aclose()

    def _build(self, name: str) -> Model:
        try:
            return infer_model(name, provider_factory=self._provider)
        except (UserError, ValueError) as error:
            is_default = name == self._settings.model
            # pydantic-ai's hint about its keyless test model speaks to library users, not ours.
            reason = str(error).split(" To try Pydantic AI", 1)[0]
            if not is_default and reason.startswith(("Unknown model", "Unknown provider")):
                # A name the caller chose: their mistake, not the server's configuration.
                raise InvalidInputError(
                    f"model {name!r} is not a model name pydantic-ai knows: use provider:model, "
                    "e.g. 'openai:gpt-4.1-mini', 'anthropic:claude-sonnet-4-5' or "
                    "'openai-chat:<model>'",
                    code="invalid_model",
                ) from error
            source = "KENNEL_MODEL" if is_default else "the worker's model"
            raise ModelNotConfiguredError(f"{source}={name!r} cannot be used: {reason}") from error

    def _provider(self, provider_name: str) -> Provider[Any]:
        if provider_name in _OPENAI_PROVIDERS:
            settings = self._settings
            return OpenAIProvider(
                base_url=settings.openai_base_url, api_key=settings.openai_api_key
            )
        return infer_provider(provider_name)
