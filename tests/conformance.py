"""What the SDK conformance modules share: a real `kennel serve` with three members, SDK
clients for them, and assertions on the official SDK's typed results and errors."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import handinger
import httpx
import pytest
from handinger.types import TaskWithTurns, Worker

from fakellm import FakeLLM
from server import KennelServer

ADA, BOB, EVE = "ada", "bob", "eve"
"""Ada and Bob are members of one organization; Eve belongs to another."""
MEMBERS = {
    ADA: ("acme", "ada@acme.test"),
    BOB: ("acme", "bob@acme.test"),
    EVE: ("umbrella", "eve@umbrella.test"),
}
EMAIL_DOMAIN = "kennel.test"
UPLOAD_LIMIT = 4096
ID = re.compile(r"^[a-z]{3}_[A-Za-z0-9_-]{14}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TITLE_MARKER = "Write a short title"
FINISHED = ("completed", "error", "aborted")
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
    "required": ["city", "celsius"],
}


@dataclass(frozen=True)
class Kennel:
    """A running `kennel serve` and the API keys of its three members."""

    server: KennelServer
    keys: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def client(self, who: str = ADA, **options: Any) -> handinger.Handinger:
        """An SDK client as a careful user builds it: strict validation, no silent retries."""
        return handinger.Handinger(**self._settings(who, options))

    def async_client(self, who: str = ADA, **options: Any) -> handinger.AsyncHandinger:
        return handinger.AsyncHandinger(**self._settings(who, options))

    def _settings(self, who: str, options: dict[str, Any]) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "api_key": self.keys[who],
            "base_url": self.base_url,
            "_strict_response_validation": True,
            "max_retries": 0,
        }
        settings.update(options)
        return settings

    def http(self, method: str, path: str, who: str | None = ADA, **kwargs: Any) -> httpx.Response:
        """A hand-written request, for what the SDK cannot send (no key, broken JSON)."""
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)


@contextmanager
def running_kennel(folder: Path, llm: FakeLLM, **env: str) -> Iterator[Kennel]:
    """`kennel serve` on `folder` with the fake model; keys made by `kennel keys create`."""
    server = KennelServer(
        folder,
        llm,
        KENNEL_KEEPALIVE_SECONDS="1",
        KENNEL_MAX_UPLOAD_FILE_BYTES=str(UPLOAD_LIMIT),
        KENNEL_EMAIL_DOMAIN=EMAIL_DOMAIN,
        KENNEL_WEBHOOK_ALLOW_HTTP="true",
        **env,
    )
    try:
        # The first key migrates the new database; the rest can then be made in parallel.
        # The server itself starts from this thread: it dies with the thread that started it.
        keys = {ADA: server.create_key(*MEMBERS[ADA])}
        with ThreadPoolExecutor() as pool:
            later = {who: pool.submit(server.create_key, *MEMBERS[who]) for who in (BOB, EVE)}
            server.start()
            keys.update({who: future.result() for who, future in later.items()})
        yield Kennel(server, keys)
    finally:
        server.stop()


def new_task_id() -> str:
    return f"tsk_{secrets.token_hex(7)}"


def turn_requests(llm: FakeLLM) -> list[dict[str, Any]]:
    """What the model received for turns, leaving out the task-title side requests."""
    return [
        request
        for request in llm.requests
        if not any(TITLE_MARKER in str(m.get("content")) for m in request["messages"])
    ]


def texts(messages: list[object]) -> list[str]:
    """The text of each `UIMessage` of a `Worker.messages` list."""
    found = []
    for message in messages:
        assert isinstance(message, dict)
        found.append("".join(p["text"] for p in message["parts"] if p["type"] == "text"))
    return found


def is_iso(value: str | None) -> bool:
    return value is not None and ISO.fullmatch(value) is not None


def assert_error(error: handinger.APIStatusError, status: int, code: str) -> str:
    """Spec §16.9: `{"error": message, "code": machine_code}`; 4xx say `x-should-retry: false`."""
    assert error.status_code == status, error.body
    assert isinstance(error.body, dict) and set(error.body) == {"error", "code"}, error.body
    assert error.body["code"] == code
    assert isinstance(error.body["error"], str) and error.body["error"]
    if 400 <= status < 500 and status != 429:
        assert error.response.headers.get("x-should-retry") == "false"
    return error.body["error"]


def refusal(
    kind: type[handinger.APIStatusError], status: int, code: str, call: Callable[[], object]
) -> str:
    """Run `call`, which must fail with exactly the SDK exception `kind`; returns the message."""
    with pytest.raises(kind) as caught:
        call()
    assert type(caught.value) is kind
    return assert_error(caught.value, status, code)


def upload(
    client: handinger.Handinger, fields: dict[str, str], files: list[tuple[str, Any]]
) -> Worker:
    """`POST /api/tasks` as multipart: 0.18 has no `files` argument, so through `client.post`.

    The Content-Type must be given: without it the SDK drops the fields and labels the
    multipart body `application/json`.
    """
    return client.post(
        "/api/tasks",
        cast_to=Worker,
        body=fields,
        files=files,
        options={"headers": {"Content-Type": "multipart/form-data"}},
    )


def poll_task(
    client: handinger.Handinger, task_id: str, statuses: tuple[str, ...] = FINISHED
) -> TaskWithTurns:
    """The task once its status is one of `statuses`; fails after 15 s."""
    deadline = time.monotonic() + 15
    found = None
    while time.monotonic() < deadline:
        try:
            found = client.tasks.retrieve(task_id)
        except handinger.NotFoundError:
            found = None
        else:
            if found.task.status in statuses:
                return found
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} never reached {statuses}: {found}")


def listing(client: handinger.Handinger, path: str, **params: Any) -> dict[str, Any]:
    """An extension listing (spec §16.7) read through the SDK's generic `get`."""
    found = client.get(path, cast_to=object, options={"params": params})
    assert isinstance(found, dict) and set(found) == {"data", "page", "pageCount", "totalCount"}
    return found
