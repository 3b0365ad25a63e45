"""A model client sends chat completions past the SDK's request machinery once it has seen
how the SDK sends them, and hands every answer but a plain 200 back to the SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI

from kennel.agent import modelhttp, shortcut
from kennel.agent.modelhttp import model_http_client
from kennel.agent.openaisdk import skip_sdk_walks
from test_openai_sdk import CHAT_CALLS, COMPLETION, _fresh

CALL: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hé"}],
    "tools": [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
        }
    ],
    "tool_choice": "auto",
    "stream": False,
    "temperature": openai.omit,
    "timeout": httpx2.Timeout(30.0, connect=5.0),
    "extra_headers": {"User-Agent": "pydantic-ai/test"},
    "extra_body": None,
}

Answer = tuple[int, dict[str, str], bytes]


def ok(**headers: str) -> Answer:
    return 200, {"Content-Type": "application/json", **headers}, json.dumps(COMPLETION).encode()


def failed(status: int, **headers: str) -> Answer:
    body = json.dumps({"error": {"message": f"status {status}", "type": "x", "code": None}})
    return status, {"Content-Type": "application/json", **headers}, body.encode()


class Model:
    """A model server on loopback answering requests in the order of `answers` (the last one
    over and over), recording what it was sent."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[list[str], bytes]] = []
        self._connections: list[asyncio.StreamWriter] = []

    def hang_up(self) -> None:
        for writer in self._connections:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.append(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
                length = next(
                    int(line.split(":", 1)[1])
                    for line in head
                    if line.lower().startswith("content-length:")
                )
                self.seen.append((head, await reader.readexactly(length)))
                status, headers, body = (
                    self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                )
                lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
                lines += [f"{name}: {value}" for name, value in headers.items()]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@asynccontextmanager
async def serving(model: Model) -> AsyncIterator[str]:
    server = await asyncio.start_server(model.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


@asynccontextmanager
async def client_of(base_url: str, max_retries: int = 2) -> AsyncIterator[AsyncOpenAI]:
    http_client = model_http_client(30.0)
    client = AsyncOpenAI(
        base_url=base_url, api_key="k", http_client=http_client, max_retries=max_retries
    )
    skip_sdk_walks(client)
    try:
        yield client
    finally:
        await http_client.aclose()


@pytest.fixture
def through_httpx2(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that went out the SDK's way (through httpx2's transport)."""
    sent: list[str] = []
    handle = modelhttp._Httpx2Failures.handle_async_request

    async def counted(self: Any, request: httpx2.Request) -> httpx2.Response:
        sent.append(request.url.path)
        return await handle(self, request)

    monkeypatch.setattr(modelhttp._Httpx2Failures, "handle_async_request", counted)
    return sent


def _headers(head: list[str]) -> list[str]:
    return [line.lower() for line in head[1:] if not line.lower().startswith("content-length")]


async def test_requests_after_the_first_go_out_as_the_sdk_sent_it(
    through_httpx2: list[str],
) -> None:
    model = Model(ok(**{"x-request-id": "req-1"}))
    async with serving(model) as url, client_of(url) as client:
        answers = [await client.chat.completions.create(**CALL) for _ in range(3)]
    assert len(through_httpx2) == 1  # the first one, watched; the others took the shortcut
    assert len(model.seen) == 3
    (first_head, first_body), *rest = model.seen
    for head, body in rest:
        assert head[0] == first_head[0] == "POST /v1/chat/completions HTTP/1.1"
        assert _headers(head) == _headers(first_head)
        assert body == first_body
    assert json.loads(first_body)["messages"][1]["content"] == "hé"
    for answer in answers:
        assert answer.model_dump() == answers[0].model_dump()
        assert answer._request_id == "req-1"
        assert answer.choices[0].message.content == "FAKEOK"


async def test_an_error_status_is_the_sdks_to_handle_without_sending_again(
    through_httpx2: list[str],
) -> None:
    model = Model(ok(), failed(500, **{"retry-after-ms": "1"}), ok(), failed(400))
    async with serving(model) as url, client_of(url, max_retries=1) as client:
        await client.chat.completions.create(**CALL)
        # The shortcut meets a 500: the SDK retries it once, as it would have.
        answer = await client.chat.completions.create(**CALL)
        assert answer.choices[0].message.content == "FAKEOK"
        assert len(model.seen) == 3
        with pytest.raises(openai.BadRequestError, match="status 400"):
            await client.chat.completions.create(**CALL)
    assert len(model.seen) == 4  # a 400 is not retried, and not sent twice
    # The learning request, the retry after the 500 and the handover of the 400's answer.
    assert len(through_httpx2) == 4


async def test_a_failure_to_connect_is_raised_as_the_sdk_raises_it() -> None:
    async def failure(learned: bool) -> BaseException:
        model = Model(ok())
        server = await asyncio.start_server(model.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        async with client_of(url, max_retries=0) as client:
            if learned:
                await client.chat.completions.create(**CALL)
            server.close()
            model.hang_up()
            await server.wait_closed()
            await asyncio.sleep(0.1)  # the client sees its kept connection close
            # The server is gone: its port refuses connections.
            with pytest.raises(openai.APIConnectionError) as caught:
                await client.chat.completions.create(**CALL)
        assert len(model.seen) == (1 if learned else 0)
        return caught.value

    sdk, shortcut_taken = await failure(learned=False), await failure(learned=True)
    assert type(shortcut_taken) is type(sdk)
    assert type(shortcut_taken.__cause__) is type(sdk.__cause__) is httpx2.ConnectError


async def test_a_cookie_sends_the_next_requests_the_sdks_way(through_httpx2: list[str]) -> None:
    model = Model(ok(), ok(**{"Set-Cookie": "lane=b; Path=/"}), ok())
    async with serving(model) as url, client_of(url) as client:
        for _ in range(3):
            await client.chat.completions.create(**CALL)
        assert client._client.cookies.get("lane") == "b"  # kept by httpx2, as without it
    assert len(model.seen) == 3
    assert "cookie: lane=b" in _headers(model.seen[2][0])
    assert len(through_httpx2) == 3  # the learning one, the cookie's handover, then httpx2's


def _events(*data: dict[str, Any]) -> Answer:
    events = "".join(f"data: {json.dumps(item)}\n\n" for item in data) + "data: [DONE]\n\n"
    return 200, {"Content-Type": "text/event-stream"}, events.encode()


def _chunk(text: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }


STREAMED = {**CALL, "stream": True, "stream_options": {"include_usage": True}}


async def test_streamed_requests_take_the_shortcut_too(through_httpx2: list[str]) -> None:
    model = Model(_events(_chunk("FAKE"), _chunk("OK é")))
    async with serving(model) as url, client_of(url) as client:
        read = []
        for _ in range(3):
            async with await client.chat.completions.create(**STREAMED) as stream:
                read.append([chunk.choices[0].delta.content async for chunk in stream])
    assert read == [["FAKE", "OK é"]] * 3
    assert len(through_httpx2) == 1
    (first_head, first_body), *rest = model.seen
    for head, body in rest:
        assert _headers(head) == _headers(first_head) and body == first_body
    assert json.loads(first_body)["stream"] is True


async def test_an_error_inside_a_stream_is_raised_as_the_sdk_raises_it(
    through_httpx2: list[str],
) -> None:
    model = Model(_events(_chunk("FAKE"), {"error": {"message": "overloaded"}}))
    async with serving(model) as url, client_of(url) as client:
        for _ in range(2):  # the SDK's way, then the shortcut
            stream = await client.chat.completions.create(**STREAMED)
            with pytest.raises(openai.APIError, match="overloaded") as caught:
                [chunk async for chunk in stream]
            assert caught.value.request.url.path == "/v1/chat/completions"
    assert len(through_httpx2) == 1


async def test_a_stream_that_sets_a_cookie_keeps_it_as_httpx2_would(
    through_httpx2: list[str],
) -> None:
    status, headers, body = _events(_chunk("FAKEOK"))
    model = Model(_events(_chunk("FAKEOK")), (status, {**headers, "Set-Cookie": "lane=c"}, body))
    async with serving(model) as url, client_of(url) as client:
        for _ in range(3):
            stream = await client.chat.completions.create(**STREAMED)
            assert [chunk.choices[0].delta.content async for chunk in stream] == ["FAKEOK"]
        assert client._client.cookies.get("lane") == "c"
    assert "cookie: lane=c" in _headers(model.seen[2][0])
    assert len(through_httpx2) == 2  # the learning one, then httpx2's for the cookie's sake


async def test_a_streamed_request_that_fails_is_the_sdks_to_handle(
    through_httpx2: list[str],
) -> None:
    model = Model(
        _events(_chunk("FAKEOK")), failed(429, **{"retry-after-ms": "1"}), _events(_chunk("B"))
    )
    async with serving(model) as url, client_of(url, max_retries=1) as client:
        for expected in ("FAKEOK", "B"):
            stream = await client.chat.completions.create(**STREAMED)
            assert [chunk.choices[0].delta.content async for chunk in stream] == [expected]
    assert len(model.seen) == 3  # the 429 was retried once, not sent twice
    assert len(through_httpx2) == 3  # learning, the 429's handover, the retry


@pytest.mark.parametrize(
    "encoded",
    [lambda body: None if body is None else body + b" ", lambda body: None],
    ids=["other bytes than the sdk", "not plain json"],
)
async def test_requests_the_shortcut_cannot_encode_as_the_sdk_go_its_way(
    through_httpx2: list[str],
    monkeypatch: pytest.MonkeyPatch,
    encoded: Callable[[bytes | None], bytes | None],
) -> None:
    encode = shortcut._encoded
    monkeypatch.setattr(shortcut, "_encoded", lambda arguments: encoded(encode(arguments)))
    model = Model(ok())
    async with serving(model) as url, client_of(url) as client:
        for _ in range(3):
            await client.chat.completions.create(**CALL)
    assert len(through_httpx2) == 3


@pytest.mark.parametrize("call", CHAT_CALLS)
async def test_a_body_is_encoded_into_the_bytes_the_sdk_sends(call: dict[str, Any]) -> None:
    """What the shortcut checks on the SDK's first request of a kind holds for every call: a
    body of plain JSON is the SDK's own bytes, any other is left to the SDK."""
    sent: list[bytes] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.content)
        return httpx2.Response(200, json=COMPLETION)

    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(record))
    client = AsyncOpenAI(base_url="http://model.test/v1", api_key="k", http_client=http_client)
    skip_sdk_walks(client)  # the SDK's way, as Kennel's clients take it
    call = {"stream": False, **call}
    await client.chat.completions.create(**_fresh(call))
    encoded = shortcut._encoded(_fresh(call))
    plain = not any(isinstance(call.get(name), Iterator) for name in ("messages", "tools"))
    assert encoded == (sent[0] if plain else None)
