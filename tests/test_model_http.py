"""Model requests go out on aiohttp and fail as httpx2 would have failed: a refused
connection, a server that hangs up or stops mid-answer, a slow answer each raise the httpx2
error the OpenAI SDK and pydantic-ai sort failures by. Proxies come from the environment, and
the model catalog closes its connections when it closes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx2
import psutil
import pytest

from fakellm import FakeLLM
from kennel.agent.modelhttp import model_http_client
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime
from kennel.config import Settings
from server import free_port
from test_provider_failures import _request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ANSWER = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


@asynccontextmanager
async def _serving(handler: Handler) -> AsyncIterator[str]:
    """A raw HTTP server on loopback; yields its base URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def _head(reader: asyncio.StreamReader) -> list[str]:
    """The request line and headers of one request (its body is left unread)."""
    return (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[:-2]


async def _post(url: str, read_timeout: float = 10.0) -> httpx2.Response:
    client = model_http_client(read_timeout)
    try:
        response = await client.post(url, json={"model": "m"})
        await response.aread()
        return response
    finally:
        await client.aclose()


async def test_an_answer_arrives() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(ANSWER)
        await writer.drain()
        writer.close()

    async with _serving(answer) as url:
        response = await _post(f"{url}/v1/chat/completions")
    assert response.status_code == 200 and response.json() == {"ok": True}


async def test_a_refused_connection_is_a_connect_error_not_a_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    with pytest.raises(httpx2.ConnectError) as caught:
        await _post(url)
    assert not isinstance(caught.value, httpx2.TimeoutException)
    assert str(caught.value.request.url) == url  # failure logs name the request


async def test_a_server_that_hangs_up_is_a_protocol_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.close()

    async with _serving(hang_up) as url:
        with pytest.raises(httpx2.RemoteProtocolError):
            await _post(f"{url}/v1/chat/completions")


async def test_an_answer_cut_short_is_a_protocol_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"choices": [')
        await writer.drain()
        writer.close()

    async with _serving(cut) as url:
        with pytest.raises(httpx2.RemoteProtocolError):
            await _post(f"{url}/v1/chat/completions")


async def test_a_slow_answer_is_a_read_timeout() -> None:
    release = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        await release.wait()
        writer.close()

    async with _serving(stall) as url:
        with pytest.raises(httpx2.ReadTimeout):
            await _post(f"{url}/v1/chat/completions", read_timeout=0.2)
        release.set()


async def test_credentials_in_the_url_become_the_authorization_header() -> None:
    seen: list[list[str]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _head(reader))
        writer.write(ANSWER)
        await writer.drain()
        writer.close()

    async with _serving(answer) as url:
        response = await _post(url.replace("http://", "http://ada:s3cret@") + "/v1/models")
    assert response.status_code == 200
    headers = dict(line.split(": ", 1) for line in seen[0][1:])
    token = base64.b64encode(b"ada:s3cret").decode()
    assert {k.lower(): v for k, v in headers.items()}["authorization"] == f"Basic {token}"
    assert "s3cret" not in seen[0][0]  # the request line carries no credentials


async def test_requests_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request_lines: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_lines.append((await _head(reader))[0])
        writer.write(ANSWER)
        await writer.drain()
        writer.close()

    async with _serving(proxy) as proxy_url:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        response = await _post("http://models.example.invalid/v1/chat/completions")
    assert response.json() == {"ok": True}
    assert request_lines == ["POST http://models.example.invalid/v1/chat/completions HTTP/1.1"]


def _connections_to(port: int) -> int:
    return sum(
        1
        for conn in psutil.Process().net_connections("tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


async def test_the_catalog_closes_its_model_connections(llm: FakeLLM) -> None:
    settings = Settings(
        model="openai-chat:fake-model", openai_base_url=llm.base_url, openai_api_key="k"
    )
    port = urlsplit(llm.base_url).port or 0
    catalog = ModelCatalog(settings)
    try:
        runtime = AgentRuntime(catalog, model_timeout=10)
        result = await runtime.run_turn(_request("openai-chat:fake-model"), lambda chunk: None)
        assert result.error is None
        assert _connections_to(port) == 1  # kept alive for the next model call
    finally:
        await catalog.aclose()
    assert _connections_to(port) == 0


async def test_requests_that_come_together_share_one_model(
    llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of first requests builds the model, and its connection pool, once."""
    settings = Settings(
        model="openai-chat:fake-model", openai_base_url=llm.base_url, openai_api_key="k"
    )
    catalog = ModelCatalog(settings)
    made: list[str] = []
    make = catalog._make

    def counted(name: str) -> object:
        made.append(name)
        return make(name)

    monkeypatch.setattr(catalog, "_make", counted)
    try:
        models = await asyncio.gather(*(catalog.get("openai-chat:fake-model") for _ in range(20)))
    finally:
        await catalog.aclose()
    assert made == ["openai-chat:fake-model"]
    assert all(model is models[0] for model in models)
