"""Model requests through the OpenAI SDK without its per-request walks of bodies and answers.

`chat.completions.create` and `responses.create` pass their body through the SDK's
`async_maybe_transform`, which walks every message and tool definition against the TypedDicts
of the endpoint's parameters (about 1 ms of CPU for a short chat with Kennel's eight tools, a
third of a request). For these two endpoints the walk changes nothing in a body made of plain
JSON values: no field of their parameters is renamed (`PropertyInfo(alias=...)`) or formatted
(`PropertyInfo(format=...)`), which `tests/test_openai_sdk.py` checks on every SDK version,
and plain values need no other conversion. So the plain JSON arguments pydantic-ai passes are
handed to the SDK as `extra_body`, which it sends as they are, merged under the caller's own
`extra_body` (which wins on a shared key, as it does over the body). Scalars move too: even
they cost the walk a type lookup, and the one for `model` hashes a `Literal` of every model
name. Only `stream` stays an argument, since the SDK reads it to choose how to read the answer.
Anything else (an iterator, a pydantic model, a value the SDK omits) still goes through the
SDK's walk.

Answers are read the other way round. The SDK builds every chat completion, and every chunk of
a streamed one, with its lenient `construct`, a recursive walk in Python (about 70 µs a chunk);
pydantic's validation in Rust builds the same object in 3 µs. So those two are validated first,
and only an answer that fails validation (a provider's field of an unexpected type, say) is
built by the SDK's walk, as leniently as before.

Each request also merges its path into the client's base URL, and httpx2 parses and checks
every part of the merged URL again (about 40 µs); a client keeps the few URLs it sends to.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx2
import pydantic
from openai import AsyncOpenAI, omit
from openai.resources.chat import AsyncChat
from openai.resources.chat.completions import AsyncCompletions
from openai.resources.responses import AsyncResponses
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from kennel.agent.shortcut import KEPT_ARGUMENTS, ChatShortcut

_SCALARS = (str, int, float, bool, type(None))
_VALIDATED = frozenset({ChatCompletion, ChatCompletionChunk})
"""Answers validated rather than constructed: the ones of every model request."""


def skip_sdk_walks(client: AsyncOpenAI) -> None:
    """Have `client`'s chat completions and responses send plain JSON bodies untransformed,
    and read chat completions validated first.

    Copies made with `with_options()` go back to the SDK's own resources.
    """
    for name, resource in (("chat", _Chat), ("responses", _Responses)):
        if isinstance(inspect.getattr_static(type(client), name, None), functools.cached_property):
            # A cached_property keeps its value in the instance: this is the client's resource.
            vars(client)[name] = resource(client)
    if not client._strict_response_validation:  # a strict client validates every answer
        vars(client)["_process_response_data"] = _validated_first(client._process_response_data)
    vars(client)["_prepare_url"] = _PreparedUrls(client)


class _PreparedUrls:
    """A client's `_prepare_url`, which merges a request's path into the base URL, keeping
    what it merged until the base URL changes. URLs are immutable: a request that needs
    another one makes a copy."""

    KEPT = 64

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client
        self._prepare = client._prepare_url
        self._base: object = None
        self._urls: dict[str, httpx2.URL] = {}

    def __call__(self, url: str) -> httpx2.URL:
        base = self._client.base_url
        if base is not self._base or len(self._urls) >= self.KEPT:
            self._base, self._urls = base, {}
        prepared = self._urls.get(url)
        if prepared is None:
            prepared = self._urls[url] = self._prepare(url)
        return prepared


def _validated_first(construct: Callable[..., Any]) -> Callable[..., Any]:
    """The client's reading of an answer (`construct`), with chat completions and their chunks
    validated first (see the module's docstring)."""

    def process(*, data: object, cast_to: type[Any], response: Any) -> Any:
        if cast_to in _VALIDATED and type(data) is dict:
            try:
                return cast_to.model_validate(data)
            except pydantic.ValidationError:
                pass
        return construct(data=data, cast_to=cast_to, response=response)

    return process


def as_they_are(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a `create` with their plain JSON body fields moved to `extra_body`."""
    extra = arguments.get("extra_body")
    if extra is not None and not isinstance(extra, Mapping):
        return arguments
    moved = {
        name: value
        for name, value in arguments.items()
        if name not in KEPT_ARGUMENTS and _is_plain(value)
    }
    if not moved:
        return arguments
    kept: dict[str, Any] = {
        name: omit if name in moved else value for name, value in arguments.items()
    }
    kept["extra_body"] = {**moved, **(extra or {})}
    return kept


def _is_plain(value: Any) -> bool:
    """Whether `value` is made of JSON's own types only: the C encoder, which takes nothing
    else, tells at a fraction of the cost of a walk in Python."""
    if type(value) in _SCALARS:
        return True
    if type(value) is not dict and type(value) is not list:
        return False
    try:
        json.dumps(value)
    except (TypeError, ValueError):  # not JSON (an iterator, a model, bytes), or circular
        return False
    return True


class _Completions(AsyncCompletions):
    def __init__(self, client: AsyncOpenAI) -> None:
        super().__init__(client)
        self._shortcut = ChatShortcut(client)

    async def create(self, **arguments: Any) -> Any:
        return await self._shortcut.create(arguments, self._sdk_create)

    async def _sdk_create(self, **arguments: Any) -> Any:
        return await super().create(**as_they_are(arguments))


class _Chat(AsyncChat):
    @functools.cached_property
    def completions(self) -> AsyncCompletions:
        return _Completions(self._client)


class _Responses(AsyncResponses):
    async def create(self, **arguments: Any) -> Any:
        return await super().create(**as_they_are(arguments))
