"""A local HTTP endpoint that stands in for a customer's webhook receiver (127.0.0.1 only)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


@dataclass
class _Endpoint:
    statuses: list[int]
    delay: float


@dataclass
class Receiver:
    """Records every POST. Each endpoint answers its statuses in turn (the last one from then
    on), after `delay` seconds; unknown paths answer 404."""

    base_url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    endpoints: dict[str, _Endpoint] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def endpoint(self, status: int = 200, *, then: Sequence[int] = (), delay: float = 0.0) -> str:
        """A new URL answering `status`, then each of `then` in turn."""
        path = f"/hook/{secrets.token_hex(6)}"
        self.endpoints[path] = _Endpoint([status, *then], delay)
        return self.base_url + path

    def to(self, url: str) -> list[Delivery]:
        path = url.removeprefix(self.base_url)
        with self.lock:
            return [d for d in self.deliveries if d.path == path]

    def wait_for(self, url: str, seconds: float = 10, count: int = 1) -> Delivery:
        """The first delivery to `url`, once `count` have arrived."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.to(url)
            if len(found) >= count:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"{count} deliveries to {url} did not arrive")

    def _answer(self, path: str) -> tuple[int, float]:
        with self.lock:
            endpoint = self.endpoints.get(path)
            if endpoint is None:
                return 404, 0.0
            status = endpoint.statuses[0]
            if len(endpoint.statuses) > 1:
                endpoint.statuses.pop(0)
            return status, endpoint.delay


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            with receiver.lock:
                receiver.deliveries.append(Delivery(self.path, headers, body))
            status, delay = receiver._answer(self.path)
            time.sleep(delay)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serving_receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = ThreadingHTTPServer((HOST, 0), _handler(found))
    server.daemon_threads = True
    found.base_url = f"http://{HOST}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
