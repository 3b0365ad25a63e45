"""The runner hands unfinished turns back on a clean stop; the next start finishes them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from fakellm import FakeLLM, Sleep, Text
from kennel.config import Settings
from kennel.models import TaskStatus
from kennel.storage import Database, Store
from kennelapp import kennel_api, settings_for


async def _until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_clean_stop_hands_the_turn_back_without_spending_an_attempt(
    tmp_path: Path, llm: FakeLLM, database_url: str
) -> None:
    settings = settings_for(tmp_path, llm, database_url=database_url)
    llm.script("long job", Sleep(30, Text("never")))
    async with kennel_api(settings) as api:
        post = asyncio.create_task(
            api.client.post("/api/tasks", json={"input": "long job", "taskId": "tsk_stop"})
        )
        await _until(
            lambda: any(r["messages"][-1].get("content") == "long job" for r in llm.requests)
        )
        organization = (
            await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
        ).organization_id
        post.cancel()
    task = await _stored_task(settings, organization)
    assert task[0] is TaskStatus.PENDING and task[1] == 0

    llm.reset()
    llm.script("long job", Text("finished on the next start"))
    async with kennel_api(settings) as api:
        response = await api.client.get("/api/tasks/tsk_stop")
        for _ in range(500):
            if response.json()["task"]["status"] == "completed":
                break
            await asyncio.sleep(0.02)
            response = await api.client.get("/api/tasks/tsk_stop")
        assert response.json()["turns"][0]["outputText"] == "finished on the next start"


async def _stored_task(settings: Settings, organization: str) -> tuple[TaskStatus, int]:
    store = Store(Database(settings.resolved_database_url))
    try:
        task = await store.tasks.get(organization, "tsk_stop")
        assert task is not None
        [turn] = await store.tasks.turns_of(task.key)
        return turn.status, turn.attempts
    finally:
        await store.close()
