"""A real `kennel serve` answers bad input, and its own failures, on the connection they came on:
one keep-alive connection carries a bad request, its 4xx or 500, then a good request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakellm import FakeLLM
from server import KennelServer

JSON_LIMIT = 65536


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM) -> Iterator[KennelServer]:
    kennel = KennelServer(
        tmp_path_factory.mktemp("keepalive"), llm, KENNEL_MAX_JSON_BYTES=str(JSON_LIMIT)
    )
    kennel.start()
    try:
        yield kennel
    finally:
        kennel.stop()


class OneConnection:
    """An httpx client held to a single connection, which tells the local port of each answer."""

    def __init__(self, server: KennelServer, key: str) -> None:
        self.client = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=60,
        )
        self.ports: list[int] = []

    def __enter__(self) -> OneConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def send(self, method: str, url: str, **options: Any) -> httpx.Response:
        response = self.client.request(method, url, **options)
        response.read()
        stream = response.extensions["network_stream"]
        self.ports.append(stream.get_extra_info("client_addr")[1])
        assert response.headers.get("connection") != "close", (url, response.text)
        return response


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "code"}
    return body


def _chunked(size: int) -> Iterator[bytes]:
    """A JSON body of about `size` bytes, sent without a `Content-Length`."""
    yield b'{"input": "'
    yield from (b"x" * 65536 for _ in range(size // 65536))
    yield b'"}'


def test_bad_requests_leave_the_connection_usable(server: KennelServer) -> None:
    with OneConnection(server, server.create_key()) as one:
        worker = one.send("POST", "/api/tasks", json={"input": "hi"}).json()
        deep = b'{"input": "x", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        _error(one.send("POST", "/api/tasks", content=deep), 400)
        long_name = {"files": ("n" * 300, b"x")}
        _error(one.send("POST", "/api/tasks", data={"input": "x"}, files=long_name), 400)
        stream = f"/api/workers/{worker['id']}?stream=true"
        _error(one.send("GET", stream, headers={"Last-Event-ID": "9" * 30}), 400)
        _error(one.send("GET", f"{stream}&startingAfter={2**70}"), 400)
        _error(one.send("GET", "/api/tasks?page=" + "9" * 40), 400)
        _error(one.send("GET", "/api/workers/wrk_%00"), 400)
        _error(one.send("POST", "/api/tasks", json={"input": "x" * 2 * JSON_LIMIT}), 413)
        _error(one.send("POST", "/api/tasks", content=_chunked(4 * 1024 * 1024)), 413)
        assert one.send("GET", "/api/workers").status_code == 200
        assert len(set(one.ports)) == 1, one.ports


def test_a_500_leaves_the_connection_usable(server: KennelServer) -> None:
    """A broken disk (here: a file where an organization's workspaces folder goes) is a 500
    that says nothing of the server's insides, on a connection that still works."""
    with OneConnection(server, server.create_key("broken", "bob@broken.test")) as one:
        organization = one.send("POST", "/api/workers", json={}).json()["organizationId"]
        broken = server.data_dir / "workspaces" / organization
        broken.parent.mkdir(parents=True, exist_ok=True)
        broken.write_text("not a folder")
        upload = {"files": ("notes.txt", b"woof")}
        body = _error(one.send("POST", "/api/tasks", data={"input": "x"}, files=upload), 500)
        assert body == {"error": "internal server error", "code": "internal_error"}
        assert one.send("GET", "/api/workers").status_code == 200
        assert len(set(one.ports)) == 1, one.ports
    assert "unhandled error in POST /api/tasks" in server.log.read_text()  # told there
