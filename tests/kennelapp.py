"""An in-process Kennel (real app, real runner, SQLite in tmp_path) driven through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fakellm import FakeLLM
from kennel.app import Kennel, build, create_app, running
from kennel.clock import Clock
from kennel.config import Settings


@dataclass
class Api:
    kennel: Kennel
    client: httpx.AsyncClient
    key: str

    def as_key(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self.client._transport,
            base_url=str(self.client.base_url),
            headers={"Authorization": f"Bearer {key}"},
        )

    async def new_key(self, organization: str, email: str) -> str:
        return (await self.kennel.services.auth.create_key(organization, email)).key


def settings_for(folder: Path, llm: FakeLLM | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": folder,
        "public_url": "http://kennel.test",
        "rate_limit_per_second": 0,
    }
    if llm is not None:
        values.update(
            model="openai-chat:fake-model", openai_base_url=llm.base_url, openai_api_key="k"
        )
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def kennel_api(
    settings: Settings, clock: Clock | None = None, *, with_runner: bool = True
) -> AsyncIterator[Api]:
    """The app on `settings` (and `clock`), with a key for ada@acme.test in organization acme."""
    kennel = build(settings, clock)
    async with running(kennel, with_runner=with_runner):
        created = await kennel.services.auth.create_key("acme", "ada@acme.test")
        transport = httpx.ASGITransport(app=create_app(kennel, with_runner=with_runner))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://kennel.test",
            headers={"Authorization": f"Bearer {created.key}"},
            timeout=30,
        ) as client:
            yield Api(kennel, client, created.key)


async def new_worker(client: httpx.AsyncClient, **fields: Any) -> str:
    """The id of a new worker created through the API."""
    response = await client.post("/api/workers", json={"title": "Rex", **fields})
    assert response.status_code == 200, response.text
    worker_id: str = response.json()["id"]
    return worker_id


async def new_schedule(api: Api, worker_id: str, when: dict[str, Any], **body: Any) -> Any:
    """A new schedule of the worker (input "Summarise the news" unless given), as answered."""
    response = await api.client.post(
        f"/api/workers/{worker_id}/schedules",
        json={"input": "Summarise the news", "when": when, **body},
    )
    assert response.status_code == 200, response.text
    return response.json()
