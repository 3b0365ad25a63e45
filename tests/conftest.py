"""Shared fixtures: databases for both backends, the fake model server, a local website, a clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import handinger
import pytest

from conformance import ADA, BOB, EVE, Kennel
from databases import drop_template, postgres_url, sqlite_url
from fakellm import FakeLLM
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime
from kennel.config import Settings
from kennel.storage import Database, Store
from kennelapp import Api, kennel_api, settings_for
from website import LocalSite


class FakeClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.moment = start or datetime(2026, 5, 11, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@pytest.fixture(scope="session", autouse=True)
def _postgres_template() -> Iterator[None]:
    yield
    asyncio.run(drop_template())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    async with postgres_url() as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(Database(database_url))
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def llm() -> Iterator[FakeLLM]:
    fake = FakeLLM().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
async def runtime(llm: FakeLLM) -> AsyncIterator[AgentRuntime]:
    """The agent runtime on the fake model."""
    settings = Settings(
        model="openai-chat:fake-model", openai_base_url=llm.base_url, openai_api_key="k"
    )
    catalog = ModelCatalog(settings)
    try:
        yield AgentRuntime(catalog, model_timeout=10)
    finally:
        await catalog.aclose()


@pytest.fixture(params=[True, False], ids=["live", "quiet"])
def live(request: pytest.FixtureRequest) -> bool:
    """Every turn behaviour holds for streamed (live) and plain (quiet) model requests."""
    return bool(request.param)


@pytest.fixture(scope="session")
def website() -> Iterator[LocalSite]:
    """Pages, redirects and fake search APIs on 127.0.0.1 for the web tools."""
    site = LocalSite().start()
    try:
        yield site
    finally:
        site.stop()


@pytest.fixture(autouse=True)
def _fresh_llm(request: pytest.FixtureRequest) -> None:
    if "llm" in request.fixturenames:
        request.getfixturevalue("llm").reset()


@pytest.fixture
async def api(tmp_path: Path, llm: FakeLLM, database_url: str) -> AsyncIterator[Api]:
    """The real app and runner on SQLite and on PostgreSQL, with the fake model."""
    settings = settings_for(tmp_path, llm, database_url=database_url)
    async with kennel_api(settings) as running_api:
        yield running_api


# SDK clients of the conformance modules; each of those modules provides its own `kennel`.
@pytest.fixture(scope="module")
def ada(kennel: Kennel) -> Iterator[handinger.Handinger]:
    with kennel.client(ADA) as client:
        yield client


@pytest.fixture(scope="module")
def bob(kennel: Kennel) -> Iterator[handinger.Handinger]:
    with kennel.client(BOB) as client:
        yield client


@pytest.fixture(scope="module")
def eve(kennel: Kennel) -> Iterator[handinger.Handinger]:
    with kennel.client(EVE) as client:
        yield client
