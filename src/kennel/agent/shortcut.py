"""Chat completions sent the way the SDK sent the last one like them, past its request machinery.

From `chat.completions.create` to the wire, the OpenAI SDK copies the request's options, merges
and checks its headers, encodes its body, builds an httpx2 request (parsing the URL it has just
printed), sends it through httpx2's client and the aiohttp transport (which builds aiohttp's
request from it), and wraps the answer twice before reading it: about 0.5 ms of CPU for a
request that aiohttp alone sends and reads in a third of that. A burst of tasks spends a
quarter of its CPU there.

So a model client learns the shape of its requests from the SDK itself. The first request of
each kind (the client's API key and base URL, the caller's extra headers, the timeout) goes the
SDK's way and is watched on its transport (`modelhttp.watching`): its URL, headers and timeouts
are kept, and so is its body, to check that this module encodes the same arguments into the
very same bytes (if not, that kind keeps going the SDK's way). From then on a request of that
kind is sent here, on the transport's own aiohttp session, with those headers and this body. A
200 answer in JSON that is a valid chat completion is read as the SDK reads it, validated; a
200 event stream becomes the SDK's own stream class over aiohttp's body, as the SDK makes it
(its cookies kept in the client's jar, as httpx2 keeps them). Any other outcome is handed to
the SDK with what the request already met (`modelhttp.replaying`): an error status, a failure
to connect, a timeout, a compressed or unexpected body, a cookie on a whole answer. The SDK
retries, raises or reads as if it had sent the request itself, without sending it again.

Only requests that need nothing else of the SDK take the shortcut: on the SDK's own client
class with a fixed API key (no key provider, custom auth or provider runtime, no idempotency
key, no strict validation), through Kennel's model client with no proxy, auth, event hooks or
cookies, and a body made of JSON's own types.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import pydantic
from multidict import CIMultiDict
from openai import AsyncOpenAI, AsyncStream, NotGiven, Omit
from openai._models import add_request_id
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from yarl import URL

from kennel.agent import modelhttp

Create = Callable[..., Awaitable[Any]]
"""The SDK's own `create`, taking the caller's arguments."""

KEPT_ARGUMENTS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout", "stream"})
"""The arguments of a `create` that are not body fields as they are: request options, and
`stream`, which the SDK reads to choose how to read the answer (and sends first)."""
_UNSENT = (Omit, NotGiven)
_UNSENT_HEADERS = frozenset({"content-length", "transfer-encoding"})
"""Headers of the watched request that belong to its body: aiohttp writes them for each."""
ROUTES_KEPT = 16


@dataclass(frozen=True, slots=True)
class _Route:
    """Where and how requests of one kind go, as watched on the SDK's first one."""

    base: object
    """The client's base URL when it was learned: a new one is a new kind."""
    session: aiohttp.ClientSession
    url: URL
    headers: CIMultiDict[str]
    timeout: aiohttp.ClientTimeout
    request: httpx2.Request
    """The watched request, without its body: what a stream's answer names as its request."""


class ChatShortcut:
    """The shortcut of one SDK client's chat completions (see the module's docstring)."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client
        self._routes: dict[tuple[Any, ...], _Route | None] = {}
        """By kind; None for a kind the SDK's request showed cannot take the shortcut."""

    async def create(self, arguments: dict[str, Any], sdk_create: Create) -> Any:
        """The answer to `create(**arguments)`, sent here when it can be, else by
        `sdk_create`."""
        key = self._kind(arguments)
        if key is None:
            return await sdk_create(**arguments)
        route = self._routes.get(key, _UNKNOWN)
        if route is _UNKNOWN:
            return await self._learn(key, arguments, sdk_create)
        body = _encoded(arguments)
        if route is None or body is None or route.base is not self._client.base_url:
            return await sdk_create(**arguments)
        try:
            response = await route.session.request(
                "POST",
                route.url,
                headers=route.headers,
                data=body,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=route.timeout,
            )
            if arguments["stream"] and _is_event_stream(response):
                return self._stream(route, response)
            try:
                answered = modelhttp.Answered(
                    response.status, response.reason, response.raw_headers, await response.read()
                )
            finally:
                response.release()
        except Exception as error:  # whatever aiohttp raised, the SDK's transport would have met
            with modelhttp.replaying(error):
                return await sdk_create(**arguments)
        completion = None if arguments["stream"] else _completion(answered, response.headers)
        if completion is not None:
            return completion
        with modelhttp.replaying(answered):
            return await sdk_create(**arguments)

    def _stream(
        self, route: _Route, response: aiohttp.ClientResponse
    ) -> AsyncStream[ChatCompletionChunk]:
        """The SDK's stream of chunks over an answer that is one, as the SDK makes it."""
        answer = modelhttp.streamed_answer(response, route.request)
        if "Set-Cookie" in response.headers:  # kept as httpx2 keeps them
            self._client._client.cookies.extract_cookies(answer)
        return AsyncStream[ChatCompletionChunk](
            cast_to=ChatCompletionChunk, response=answer, client=self._client
        )

    def _kind(self, arguments: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """What makes requests alike on the wire but for their body, or None for a request
        that must go the SDK's way."""
        stream = arguments.get("stream")
        if type(stream) is not bool or arguments.get("extra_query") is not None:
            return None
        client = self._client
        http = client._client
        if (
            type(client) is not AsyncOpenAI
            or client._strict_response_validation
            or client._idempotency_header is not None
            or client._api_key_provider is not None
            or client._provider_runtime is not None
            or client.custom_auth is not None
            or not isinstance(http, modelhttp.ModelClient)
            or http.auth is not None
            or any(http.event_hooks.values())
            or len(http.cookies.jar) > 0
        ):
            return None
        headers = arguments.get("extra_headers") or {}
        if not all(type(value) is str for value in headers.values()):
            return None
        timeout = arguments.get("timeout")
        if isinstance(timeout, httpx2.Timeout):
            timeout = (timeout.connect, timeout.read, timeout.write, timeout.pool)
        elif not isinstance(timeout, (int, float, type(None))):
            return None  # the client's own, which may change
        return (
            stream,
            client.api_key,
            client.organization,
            client.project,
            id(client.base_url),
            tuple(headers.items()),
            timeout,
        )

    async def _learn(self, key: tuple[Any, ...], arguments: dict[str, Any], create: Create) -> Any:
        base = self._client.base_url
        with modelhttp.watching() as sent:
            answer = await create(**arguments)
        record = sent()
        if record is not None:
            if len(self._routes) >= ROUTES_KEPT:
                self._routes.clear()
            self._routes[key] = _route(record, base, _encoded(arguments))
        return answer


_UNKNOWN: Any = object()


def _route(sent: modelhttp.Sent, base: object, body: bytes | None) -> _Route | None:
    """How requests like the watched one go, or None if they can't go this way."""
    request = sent.request
    session = sent.transport.client if sent.transport is not None else None
    extensions = request.extensions
    if (
        not isinstance(session, aiohttp.ClientSession)
        or request.method != "POST"
        or body is None
        or request.content != body
        or extensions.get("sni_hostname") is not None
    ):
        return None
    timeout = extensions.get("timeout", {})
    return _Route(
        base=base,
        session=session,
        url=URL(str(request.url), encoded=True),
        headers=CIMultiDict(
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() not in _UNSENT_HEADERS
        ),
        # As the aiohttp transport maps httpx2's timeouts.
        timeout=aiohttp.ClientTimeout(
            sock_connect=timeout.get("connect"),
            sock_read=timeout.get("read"),
            connect=timeout.get("pool"),
        ),
        request=httpx2.Request(request.method, request.url, headers=request.headers),
    )


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.status == 200 and response.content_type == "text/event-stream"


def _encoded(arguments: Mapping[str, Any]) -> bytes | None:
    """The body the SDK sends for `arguments` whose fields are all JSON's own types (the
    SDK's walk changes none of them; `openaisdk` says why), as it encodes it; None for any
    other."""
    body: dict[str, Any] = {"stream": arguments.get("stream")}
    for name, value in arguments.items():
        if name not in KEPT_ARGUMENTS and not isinstance(value, _UNSENT):
            body[name] = value
    extra = arguments.get("extra_body")
    if extra is not None:
        if not isinstance(extra, Mapping):
            return None
        body.update(extra)
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):  # not JSON's own types, or circular
        return None


def _completion(answered: modelhttp.Answered, headers: Mapping[str, str]) -> ChatCompletion | None:
    """The chat completion in a plain 200 answer (`headers` are its own, as aiohttp read them),
    as the SDK would read it; None for an answer the SDK must read itself."""
    if answered.status != 200:
        return None
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    if encoding != "identity" or "Set-Cookie" in headers or not content_type.endswith("json"):
        return None
    try:
        completion = ChatCompletion.model_validate_json(answered.body)
    except pydantic.ValidationError:
        return None
    add_request_id(completion, headers.get("x-request-id"))
    return completion
