"""Kennel's streamed responses send their body, stop it when the client goes away, and let
a cancellation from outside go on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kennel.api.streaming import WatchedStream

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


class Client:
    """The server's side of one request: what was sent, and a disconnect on demand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.left = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def test_the_body_is_sent_chunk_by_chunk_then_ended() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"one "
        await asyncio.sleep(0)
        yield b"two"

    client = Client()
    await WatchedStream(body(), media_type="application/json")(SCOPE, client.receive, client.send)
    assert client.sent[0]["type"] == "http.response.start" and client.sent[0]["status"] == 200
    assert client.body == b"one two"
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_client_that_leaves_stops_the_body_and_the_response_ends_quietly() -> None:
    closed = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # a turn that runs on
            yield b"never"
        finally:
            closed.set()

    client = Client()
    response = asyncio.create_task(WatchedStream(body())(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.01)
    assert client.body == b"first" and not response.done()
    client.left.set()
    await asyncio.wait_for(response, 1)  # returns: no CancelledError leaks to the server
    assert closed.is_set() and client.body == b"first"


@pytest.mark.parametrize("client_left", [False, True])
async def test_a_cancellation_from_outside_goes_on(client_left: bool) -> None:
    """The server shutting down cancels the response, even at the moment the client left."""

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.Event().wait()

    client = Client()
    response = asyncio.create_task(WatchedStream(body())(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.01)
    if client_left:
        client.left.set()
        await asyncio.sleep(0)  # the watcher has seen the disconnect and stops the body
    response.cancel()
    with pytest.raises(asyncio.CancelledError):
        await response
