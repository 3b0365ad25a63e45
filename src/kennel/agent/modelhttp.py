"""The HTTP client that OpenAI-compatible model requests go out on: aiohttp under httpx2.

The OpenAI SDK speaks httpx2, whose own connection pool is written in Python and walks every
pooled connection on each request and each event of an answer: with hundreds of model calls in
flight (a burst of tasks) that walk is most of a call's cost. httpx-aiohttp carries the same
requests over aiohttp, whose pool and parser are in C; docs/performance.md has the numbers.

The transport's own table calls most failures a connect timeout: a refused connection, a
server that hung up. The SDK and pydantic-ai sort failures by their httpx2 class, and Kennel
tells a caller which setting to check by it, so the failures are raised here as httpx2 itself
would raise them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
from httpx_aiohttp.httpx2 import Httpx2AiohttpClient
from httpx_aiohttp.httpx2.transport import (
    AiohttpResponseStream,
    AiohttpTransport,
    map_aiohttp_exceptions,
)

CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection to a provider, as pydantic-ai's own client allows."""
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
"""Open connections per model (as the OpenAI SDK's and pydantic-ai's clients): a burst of
tasks keeps one model call each in flight."""

_AS_HTTPX2: tuple[tuple[type[BaseException], type[httpx2.TransportError]], ...] = (
    # The most specific first: a proxy failure is a connector error is a connection error.
    (aiohttp.ClientProxyConnectionError, httpx2.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx2.ProxyError),
    (aiohttp.ConnectionTimeoutError, httpx2.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx2.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx2.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx2.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx2.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx2.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx2.RemoteProtocolError),
    (aiohttp.ClientOSError, httpx2.ReadError),
    (aiohttp.NonHttpUrlClientError, httpx2.UnsupportedProtocol),
    (aiohttp.InvalidUrlClientError, httpx2.UnsupportedProtocol),
    (aiohttp.ClientError, httpx2.NetworkError),
)


def model_http_client(timeout: float) -> httpx2.AsyncClient:
    """A client for one provider; whoever builds it closes it (`aclose`)."""
    return ModelClient(timeout=httpx2.Timeout(timeout, connect=CONNECT_TIMEOUT), limits=LIMITS)


class ModelClient(Httpx2AiohttpClient):
    """httpx-aiohttp's client: httpx2 on aiohttp transports, with proxies read from the
    environment once, as httpx2 reads them, and failures raised as httpx2's."""

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
        return _Httpx2Failures(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
        return _Httpx2Failures(super()._init_proxy_transport(*args, **kwargs))


@dataclass(slots=True)
class Sent:
    """A request a model client sent (`watching`), and the aiohttp transport it went out on."""

    request: httpx2.Request
    transport: AiohttpTransport | None
    """None when it went out some other way (another transport, through a proxy)."""


@dataclass(frozen=True, slots=True)
class Answered:
    """What a request got back from its server, read whole; `replaying` hands it over."""

    status: int
    reason: str | None
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes


class _Tap:
    """What the next request a task sends on a model client meets: a record of it
    (`watching`), or an answer already had (`replaying`)."""

    def __init__(self, answer: Answered | BaseException | None = None) -> None:
        self.answer = answer
        self.sent: Sent | None = None
        self.used = False


_TAP: ContextVar[_Tap | None] = ContextVar("kennel_model_http_tap", default=None)


@contextmanager
def watching() -> Iterator[Callable[[], Sent | None]]:
    """Record the first request the block sends on a model client; the block's value tells
    what went out, once it has (None if nothing did)."""
    tap = _Tap()
    token = _TAP.set(tap)
    try:
        yield lambda: tap.sent
    finally:
        _TAP.reset(token)


@contextmanager
def replaying(answer: Answered | BaseException) -> Iterator[None]:
    """The first request the block sends on a model client is not sent: it gets `answer`,
    which that same request already got from the server (or the aiohttp error it met), as
    if it had come now. What the block does with it (read it, retry, raise) is as it would
    have been."""
    token = _TAP.set(_Tap(answer))
    try:
        yield
    finally:
        _TAP.reset(token)


class _Httpx2Failures(httpx2.AsyncBaseTransport):
    """An aiohttp transport whose failures, and those of its answers' bodies, are httpx2's."""

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.userinfo:
            # The client has made the URL's user and password an Authorization header already,
            # as httpx2 does, and aiohttp refuses a URL that still carries them beside it.
            request.url = request.url.copy_with(userinfo=b"")
        tap = _TAP.get()
        if tap is not None and not tap.used:
            tap.used = True
            if tap.answer is not None:
                return _replayed(tap.answer, request)
            inner = self._transport
            plain = isinstance(inner, AiohttpTransport) and inner.proxy is None
            tap.sent = Sent(request, inner if plain else None)  # type: ignore[arg-type]
        with _as_httpx2(request):
            response = await self._transport.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # an aiohttp answer's body
        response.stream = _Body(response.stream, request)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


def streamed_answer(response: aiohttp.ClientResponse, request: httpx2.Request) -> httpx2.Response:
    """aiohttp's `response` to `request` as the transport returns it, its body still to read:
    its failures are httpx2's, and closing it releases the connection."""
    body = AiohttpResponseStream(response)
    return _answer(response.status, response.reason, response.raw_headers, body, request)


def _replayed(answer: Answered | BaseException, request: httpx2.Request) -> httpx2.Response:
    """`answer` as the transport would have returned it for `request`, or raised it."""
    if isinstance(answer, BaseException):
        # As the transport raises aiohttp's errors: its own guess first, then this module's.
        with _as_httpx2(request), map_aiohttp_exceptions():
            raise answer
    body = httpx2.ByteStream(answer.body)
    return _answer(answer.status, answer.reason, answer.headers, body, request)


def _answer(
    status: int,
    reason: str | None,
    headers: Sequence[tuple[bytes, bytes]],
    body: httpx2.AsyncByteStream,
    request: httpx2.Request,
) -> httpx2.Response:
    """An answer as the aiohttp transport makes it, its body's failures raised as httpx2's."""
    extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
    if reason:
        extensions["reason_phrase"] = reason.encode()
    return httpx2.Response(
        status_code=status,
        headers=list(headers),
        stream=_Body(body, request),
        request=request,
        extensions=extensions,
    )


class _Body(httpx2.AsyncByteStream):
    """An answer's body, its failures raised as httpx2's."""

    def __init__(self, stream: httpx2.AsyncByteStream, request: httpx2.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx2(self._request):
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _as_httpx2(self._request):
            await self._stream.aclose()


@contextmanager
def _as_httpx2(request: httpx2.Request) -> Iterator[None]:
    try:
        yield
    except (httpx2.TransportError, aiohttp.ClientError) as error:
        # The transport raises its own guess from aiohttp's error, or aiohttp's error itself.
        cause = error.__cause__ if isinstance(error, httpx2.TransportError) else error
        if not isinstance(cause, aiohttp.ClientError):
            raise
        raise _httpx2_error(cause, request) from cause


def _httpx2_error(error: aiohttp.ClientError, request: httpx2.Request) -> httpx2.TransportError:
    kind = next(kind for aiohttp_kind, kind in _AS_HTTPX2 if isinstance(error, aiohttp_kind))
    return kind(str(error) or type(error).__name__, request=request)
