"""The worker page and the task page, in process: running a task from the composer, reading
its stream with the session, the conversation, cancelling; and who may see what."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dashboard import Browser, signed_in
from fakellm import FakeLLM, Sleep, Text, ToolCall, tool_calls
from kennelapp import Api, kennel_api, new_worker, settings_for


@pytest.fixture
async def api(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, llm)) as running:
        yield running


async def run(tab: Browser, worker_id: str, text: str, **fields: str) -> str:
    """Run a task from the composer; returns the task page's path."""
    response = await tab.post(f"/worker/{worker_id}/tasks", {"input": text, **fields})
    assert response.status_code == 303, response.text
    return response.headers["location"].partition("#")[0]


async def finished(api: Api, task_path: str) -> None:
    task_id = task_path.rsplit("/", 1)[1]
    for _ in range(300):
        task = (await api.client.get(f"/api/tasks/{task_id}")).json()["task"]
        if task["status"] in ("completed", "error", "aborted"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} never finished")


async def test_a_task_run_from_the_composer_is_a_ui_task_shown_on_its_page(
    api: Api, llm: FakeLLM
) -> None:
    llm.script("weather", Text("It is **sunny** <script>alert(1)</script>"))
    worker_id = await new_worker(api.client, title="Weatherman")
    tab = await signed_in(api)
    task_path = await run(tab, worker_id, "weather in Oslo?", budget="low")
    await finished(api, task_path)
    page = await tab.get(task_path)
    assert page.status_code == 200
    assert "<strong>sunny</strong>" in page.text
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert "budget <strong>low</strong>" in page.text and "/ 4" in page.text  # requests cap
    task = (await api.client.get(f"/api/tasks/{task_path.rsplit('/', 1)[1]}")).json()["task"]
    assert task["triggeredBy"] == "ui" and task["url"].endswith(task_path)
    listing = await tab.get(f"/worker/{worker_id}?by=ui")
    assert task_path in listing.text
    assert task_path not in (await tab.get(f"/worker/{worker_id}?by=api")).text


async def test_the_stream_replays_a_turn_and_resumes_after_last_event_id(api: Api) -> None:
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    task_path = await run(tab, worker_id, "count the dogs")
    await finished(api, task_path)
    page = await tab.get(task_path)
    turn_id = page.text.split('id="turn-', 1)[1].split('"', 1)[0]
    events = f"{task_path}/turns/{turn_id}/events"
    whole = (await tab.get(events)).text
    assert '"type":"text-delta"' in whole and whole.endswith("data: [DONE]\n\n")
    ids = [int(line[4:]) for line in whole.splitlines() if line.startswith("id: ")]
    rest = (await tab.get(events, headers={"last-event-id": str(ids[2])})).text
    assert [int(line[4:]) for line in rest.splitlines() if line.startswith("id: ")] == ids[3:]


async def test_follow_ups_continue_the_task_and_tools_show_folded(api: Api, llm: FakeLLM) -> None:
    llm.script("list", tool_calls(ToolCall("list_files", {})), Text("Nothing there."))
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    task_path = await run(tab, worker_id, "list my files")
    await finished(api, task_path)
    task_id = task_path.rsplit("/", 1)[1]
    assert await run(tab, worker_id, "and now?", task_id=task_id) == task_path
    await finished(api, task_path)
    page = await tab.get(task_path)
    assert page.text.count('class="turn"') == 2
    assert "<summary>Tool <code>list_files</code>" in page.text


async def test_cancel_stops_a_running_task(api: Api, llm: FakeLLM) -> None:
    llm.script("slow", Sleep(30, Text("too late")))
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    task_path = await run(tab, worker_id, "slow work")
    assert "Cancel" in (await tab.get(task_path)).text
    cancelled = await tab.post(f"{task_path}/cancel")
    assert cancelled.status_code == 303
    page = await tab.get(task_path)
    assert "Cancelled before it finished." in page.text and "status-aborted" in page.text


async def test_cancelling_a_task_that_already_ended_just_shows_it(api: Api) -> None:
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    task_path = await run(tab, worker_id, "quick one")
    await finished(api, task_path)
    late = await tab.post(f"{task_path}/cancel")
    assert late.status_code == 303 and late.headers["location"] == task_path
    assert "status-completed" in (await tab.get(task_path)).text


async def test_a_worker_described_in_plain_words_gets_written_by_its_model(
    api: Api, llm: FakeLLM
) -> None:
    design = {"instructions": "You watch prices daily.", "summary": "Watches prices"}
    llm.script("Watch prices", tool_calls(ToolCall("final_result", design)))
    tab = await signed_in(api)
    created = await tab.post("/workers/new", {"prompt": "Watch prices for me"})
    assert created.status_code == 303
    worker = (await api.client.get("/api/workers")).json()["data"][0]
    assert (worker["instructions"], worker["summary"]) == tuple(design.values())


async def test_files_attached_in_the_composer_reach_the_workspace(api: Api) -> None:
    worker_id = await new_worker(api.client)
    tab = await signed_in(api)
    sent = await tab.client.post(
        f"/worker/{worker_id}/tasks",
        data={"csrf_token": tab.csrf, "input": "read the notes", "budget": "low"},
        files=[("files", ("notes.txt", b"dogs bark", "text/plain"))],
        headers={"origin": "http://kennel.test"},
    )
    assert sent.status_code == 303, sent.text
    task_path = sent.headers["location"].partition("#")[0]
    await finished(api, task_path)
    state = (await api.client.get(f"/api/workers/{worker_id}")).json()
    assert [f["filename"] for f in state["files"]] == ["notes.txt"]
    assert "notes.txt" in (await tab.get(f"/worker/{worker_id}")).text
    refused = await tab.post(f"/worker/{worker_id}/tasks", {"input": " "})
    assert refused.status_code == 400 and "write what the worker should do" in refused.text


async def test_other_organizations_get_404_without_data(api: Api, llm: FakeLLM) -> None:
    llm.script("secret", Text("the launch code is 1234"))
    worker_id = await new_worker(api.client, title="Vault")
    ada = await signed_in(api)
    task_path = await run(ada, worker_id, "secret please")
    await finished(api, task_path)
    eve = await signed_in(api, await api.new_key("umbrella", "eve@umbrella.test"))
    for path in (f"/worker/{worker_id}", task_path, f"{task_path}/turns/x/events"):
        page = await eve.get(path)
        assert page.status_code == 404, path
        assert "Vault" not in page.text and "1234" not in page.text
    refused = await eve.post(f"/worker/{worker_id}/tasks", {"input": "hi"})
    assert refused.status_code == 404


async def test_a_private_worker_is_its_creators_alone(api: Api) -> None:
    worker_id = await new_worker(api.client, title="Diary", visibility="private")
    bob = await signed_in(api, await api.new_key("acme", "bob@acme.test"))
    assert (await bob.get(f"/worker/{worker_id}")).status_code == 404
    assert "Diary" not in (await bob.get("/")).text


async def test_creator_only_sections_are_hidden_from_other_members(api: Api) -> None:
    worker_id = await new_worker(api.client, title="Shared")
    ada = await signed_in(api)
    mine = await ada.get(f"/worker/{worker_id}")
    assert 'id="webhook"' in mine.text and f"/worker/{worker_id}/edit" in mine.text
    bob = await signed_in(api, await api.new_key("acme", "bob@acme.test"))
    theirs = await bob.get(f"/worker/{worker_id}")
    assert theirs.status_code == 200 and "Shared" in theirs.text
    assert 'id="webhook"' not in theirs.text and f"/worker/{worker_id}/edit" not in theirs.text
    assert (
        await bob.post(f"/worker/{worker_id}/webhook", {"url": "https://x.test"})
    ).status_code == 403
