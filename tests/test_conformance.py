"""The official SDK (`handinger==0.18.0`, strict response validation on) against a real
`kennel serve` process: workers, tasks, files and errors, asserted on the typed results.

One server serves the whole module (streams and schedules have their own modules). Its
keep-alive is 1 s, so blocking calls can be tested against short client timeouts; its upload
limit is small, so the 413 needs only a few kilobytes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import handinger
import httpx
import pytest
from handinger.types import (
    DeleteTaskResponse,
    DeleteWorkerResponse,
    TaskWithTurns,
    Worker,
    WorkerRetrieveEmailResponse,
    WorkerTemplate,
)
from handinger.types.worker import Output, OutputContent, Usage

from conformance import (
    ADA,
    EMAIL_DOMAIN,
    ID,
    SCHEMA,
    UPLOAD_LIMIT,
    Kennel,
    is_iso,
    listing,
    new_task_id,
    poll_task,
    refusal,
    running_kennel,
    texts,
    turn_requests,
    upload,
)
from fakellm import FakeLLM, Sleep, Text, ToolCall, tool_calls
from kennel.services import dognames
from prompts import listed

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def kennel(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM) -> Iterator[Kennel]:
    with running_kennel(tmp_path_factory.mktemp("conformance"), llm) as found:
        yield found


# ---------------------------------------------------------------------------------------------
# Workers


def test_create_without_arguments_sends_an_empty_body_and_gets_a_dog_name(
    kennel: Kennel, ada: handinger.Handinger
) -> None:
    raw = ada.workers.with_raw_response.create()
    assert raw.http_request.content == b"{}"
    worker = raw.parse()

    assert isinstance(worker, WorkerTemplate)
    assert ID.fullmatch(worker.id) and worker.id.startswith("wrk_")
    assert any(worker.title.endswith(breed) for breed in dognames._BREEDS), worker.title
    assert worker.visibility == "public" and worker.output_schema is None
    assert worker.instructions == "" and worker.summary == ""
    assert worker.organization_id.startswith("org_") and worker.user_id.startswith("usr_")
    assert worker.url == f"{kennel.base_url}/worker/{worker.id}"
    assert is_iso(worker.created_at) and worker.updated_at == worker.created_at


def test_create_with_every_field(ada: handinger.Handinger, bob: handinger.Handinger) -> None:
    raw = ada.workers.with_raw_response.create(
        instructions="You are Rex, a concise research dog.",
        output_schema=SCHEMA,
        prompt="Find the weather for a city.",
        summary="Weather reports",
        title="Rex",
        visibility="private",
    )
    assert json.loads(raw.http_request.content) == {
        "instructions": "You are Rex, a concise research dog.",
        "outputSchema": SCHEMA,
        "prompt": "Find the weather for a city.",
        "summary": "Weather reports",
        "title": "Rex",
        "visibility": "private",
    }
    worker = raw.parse()
    assert worker.instructions == "You are Rex, a concise research dog."
    assert worker.output_schema == SCHEMA
    assert (worker.summary, worker.title, worker.visibility) == (
        "Weather reports",
        "Rex",
        "private",
    )

    colleague = bob.workers.create(title="Bob's")
    assert colleague.organization_id == worker.organization_id
    assert colleague.user_id != worker.user_id


def test_a_prompt_alone_gives_instructions_and_a_summary(ada: handinger.Handinger) -> None:
    worker = ada.workers.create(prompt="Find dog parks near the user. Answer in one line.")
    assert worker.instructions
    assert worker.summary and len(worker.summary) <= 80


def test_update_changes_only_the_given_fields(ada: handinger.Handinger) -> None:
    created = ada.workers.create(
        title="Before", instructions="Be brief.", summary="Brief", output_schema=SCHEMA
    )

    renamed = ada.workers.update(created.id, title="After", visibility="private")
    assert (renamed.title, renamed.visibility) == ("After", "private")
    assert (renamed.instructions, renamed.summary, renamed.output_schema) == (
        "Be brief.",
        "Brief",
        SCHEMA,
    )
    assert renamed.created_at == created.created_at
    assert is_iso(renamed.updated_at) and renamed.updated_at >= created.updated_at

    raw = ada.workers.with_raw_response.update(created.id, output_schema=None)
    assert json.loads(raw.http_request.content) == {"outputSchema": None}
    cleared = raw.parse()
    assert cleared.output_schema is None
    assert (cleared.title, cleared.instructions, cleared.visibility) == (
        "After",
        "Be brief.",
        "private",
    )

    unchanged = ada.workers.update(created.id)
    assert unchanged.model_dump() == cleared.model_dump()


def test_a_deleted_worker_is_gone_everywhere(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    task_id = new_task_id()
    before = upload(
        ada,
        {"input": "keep this", "workerId": worker.id, "taskId": task_id},
        [("files", ("kept.txt", b"kept", "text/plain"))],
    )
    [file] = before.files
    raw = ada.workers.with_raw_response.delete(worker.id)
    assert raw.http_request.headers["content-type"] == "application/json"
    deleted = raw.parse()
    assert isinstance(deleted, DeleteWorkerResponse) and deleted.deleted is True

    for call in (
        lambda: ada.workers.retrieve(worker.id),
        lambda: ada.workers.update(worker.id, title="Back"),
        lambda: ada.workers.delete(worker.id),
        lambda: ada.workers.retrieve_email(worker.id),
        lambda: ada.tasks.create(input="still there?", worker_id=worker.id),
        lambda: ada.tasks.create(input="still there?", task_id=task_id),
        lambda: ada.tasks.retrieve(task_id),
        lambda: ada.tasks.delete(task_id),
        lambda: ada.get(file.url, cast_to=bytes),
    ):
        refusal(handinger.NotFoundError, 404, "not_found", call)
    assert worker.id not in {item["id"] for item in listing(ada, "/api/workers")["data"]}
    assert task_id not in {item["id"] for item in listing(ada, "/api/tasks")["data"]}


def test_retrieve_email(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    found = ada.workers.retrieve_email(worker.id)
    assert isinstance(found, WorkerRetrieveEmailResponse)
    assert found.email == f"{worker.id}@{EMAIL_DOMAIN}"


def test_a_worker_without_tasks_is_pending(kennel: Kennel, ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    state = ada.workers.retrieve(worker.id)
    assert isinstance(state, Worker)
    assert (state.id, state.object, state.status, state.running) == (
        worker.id,
        "worker",
        "pending",
        False,
    )
    assert state.created_at is None and state.output_text == "" and state.output == []
    assert state.files == [] and state.messages == [] and state.sources == []
    assert state.metadata == {} and state.structured_output is None
    assert state.url == f"{kennel.base_url}/worker/{worker.id}"


def test_retrieve_shows_the_latest_task_or_the_one_named_by_taskId(
    ada: handinger.Handinger,
) -> None:
    worker = ada.workers.create()
    first, second = new_task_id(), new_task_id()
    ada.tasks.create(input="first topic", worker_id=worker.id, task_id=first)
    ada.tasks.create(input="second topic", worker_id=worker.id, task_id=second)

    latest = ada.workers.retrieve(worker.id)
    assert latest.metadata["taskId"] == second and latest.output_text == "echo: second topic"
    chosen = ada.workers.retrieve(worker.id, extra_query={"taskId": first})
    assert chosen.metadata["taskId"] == first and chosen.output_text == "echo: first topic"
    assert texts(chosen.messages) == ["first topic", "echo: first topic"]
    refusal(
        handinger.NotFoundError,
        404,
        "not_found",
        lambda: ada.workers.retrieve(worker.id, extra_query={"taskId": "tsk_unknown"}),
    )


def test_listing_workers_shows_what_each_caller_may_see(
    ada: handinger.Handinger, bob: handinger.Handinger, eve: handinger.Handinger
) -> None:
    public = ada.workers.create(title="Public Rex")
    private = ada.workers.create(title="Private Rex", visibility="private")

    mine = listing(ada, "/api/workers")
    assert mine["page"] == 1 and mine["totalCount"] >= 2 and mine["pageCount"] >= 1
    by_id = {item["id"]: item for item in mine["data"]}
    assert {public.id, private.id} <= set(by_id)
    assert WorkerTemplate.model_validate(by_id[public.id]).model_dump() == public.model_dump()

    colleague = {item["id"] for item in listing(bob, "/api/workers")["data"]}
    assert public.id in colleague and private.id not in colleague
    stranger = {item["id"] for item in listing(eve, "/api/workers")["data"]}
    assert not stranger & {public.id, private.id}


# ---------------------------------------------------------------------------------------------
# Tasks


def test_a_blocking_task_returns_a_typed_worker(
    kennel: Kennel, ada: handinger.Handinger, llm: FakeLLM
) -> None:
    llm.script("weather in Oslo", Text("It is 12°C in Oslo."))
    worker = ada.workers.create(instructions="You are Rex.")
    task_id = new_task_id()

    raw = ada.tasks.with_raw_response.create(
        input="What is the weather in Oslo?", budget="low", task_id=task_id, worker_id=worker.id
    )
    assert json.loads(raw.http_request.content) == {
        "input": "What is the weather in Oslo?",
        "budget": "low",
        "taskId": task_id,
        "workerId": worker.id,
    }
    assert raw.headers["x-task-id"] == task_id
    result = raw.parse()

    assert isinstance(result, Worker)
    assert (result.id, result.object, result.status, result.running) == (
        worker.id,
        "worker",
        "completed",
        False,
    )
    assert result.error is None and result.incomplete_details is None
    assert result.output_text == "It is 12°C in Oslo."
    [output] = result.output
    assert isinstance(output, Output) and output.role == "assistant"
    assert output.content == [OutputContent(type="output_text", text="It is 12°C in Oslo.")]
    assert isinstance(result.created_at, int) and abs(result.created_at - time.time()) < 600
    assert result.metadata == {
        "taskId": task_id,
        "turnId": raw.headers["x-turn-id"],
        "taskTitle": result.metadata["taskTitle"],
        "budget": "low",
        "triggeredBy": "api",
    }
    assert isinstance(result.metadata["taskTitle"], str) and result.metadata["taskTitle"]
    assert str(result.metadata["turnId"]).startswith("trn_")
    assert isinstance(result.usage, Usage) and result.usage.credits and result.usage.credits >= 1
    assert isinstance(result.usage.duration_ms, int)
    assert [m["role"] for m in result.messages] == ["user", "assistant"]
    assert result.sources == [] and result.files == [] and result.structured_output is None
    assert result.url == f"{kennel.base_url}/worker/{worker.id}"

    body = raw.json()
    assert isinstance(body, dict)
    assert {"created_at", "output_text", "incomplete_details", "structured_output"} <= set(body)
    assert set(body["usage"]) == {"credits", "durationMs"}
    assert turn_requests(llm)[0]["messages"][0] == {"role": "system", "content": "You are Rex."}


def test_a_follow_up_turn_sees_the_conversation(ada: handinger.Handinger, llm: FakeLLM) -> None:
    worker = ada.workers.create(instructions="You are Rex.")
    task_id = new_task_id()
    first = ada.tasks.create(input="My name is Ada.", worker_id=worker.id, task_id=task_id)
    second = ada.tasks.create(input="What is my name?", task_id=task_id)

    assert second.id == worker.id and second.metadata["taskId"] == task_id
    assert second.metadata["turnId"] != first.metadata["turnId"]
    sent = [m.get("content") for m in turn_requests(llm)[-1]["messages"]]
    assert sent == ["You are Rex.", "My name is Ada.", "echo: My name is Ada.", "What is my name?"]
    assert [m["role"] for m in second.messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    found = ada.tasks.retrieve(task_id)
    assert [turn.seq for turn in found.turns] == [0, 1]
    assert found.task.totals.turn_count == 2


def test_a_follow_up_sent_while_a_turn_runs_waits_for_it(
    ada: handinger.Handinger, llm: FakeLLM
) -> None:
    llm.script("long first step", Sleep(1.5, Text("first answer")))
    llm.script("and then", Text("second answer"))
    worker = ada.workers.create()
    task_id = new_task_id()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            ada.tasks.create, input="long first step", worker_id=worker.id, task_id=task_id
        )
        poll_task(ada, task_id, ("running",))
        second = ada.tasks.create(input="and then?", task_id=task_id)
        assert first.result(timeout=20).output_text == "first answer"

    assert second.output_text == "second answer"
    sent = [m.get("content") for m in turn_requests(llm)[-1]["messages"]]
    assert sent[-3:] == ["long first step", "first answer", "and then?"]
    assert [(t.seq, t.status) for t in ada.tasks.retrieve(task_id).turns] == [
        (0, "completed"),
        (1, "completed"),
    ]


def test_caller_metadata_joins_the_worker_metadata(ada: handinger.Handinger) -> None:
    # `metadata` is a Kennel extension of the request body (spec §16.4); Kennel's keys win.
    result = ada.tasks.create(
        input="tagged request", extra_body={"metadata": {"ticket": "T-7", "taskId": "forged"}}
    )
    assert result.metadata["ticket"] == "T-7"
    assert result.metadata["taskId"] != "forged"
    assert ada.tasks.retrieve(str(result.metadata["taskId"])).task.status == "completed"


def test_client_chosen_task_ids_survive_the_sdk_path_encoding(ada: handinger.Handinger) -> None:
    task_id = f"order:{secrets.token_hex(3)}.v1_a-b"
    result = ada.tasks.create(input="chosen id", task_id=task_id)
    assert result.metadata["taskId"] == task_id
    assert ada.tasks.retrieve(task_id).task.id == task_id
    assert ada.workers.retrieve(result.id, extra_query={"taskId": task_id}).output_text == (
        "echo: chosen id"
    )
    assert ada.tasks.delete(task_id).archived is True


def test_a_task_without_a_worker_creates_one_from_its_input(
    ada: handinger.Handinger, llm: FakeLLM
) -> None:
    result = ada.tasks.create(input="Summarise the news about dogs")
    assert (
        result.id.startswith("wrk_") and result.output_text == "echo: Summarise the news about dogs"
    )
    assert turn_requests(llm)[0]["messages"][0] == {
        "role": "system",
        "content": "Summarise the news about dogs",
    }
    found = ada.tasks.retrieve(str(result.metadata["taskId"]))
    assert found.task.worker_id == result.id


def test_retrieve_task_returns_the_task_and_its_turns(
    kennel: Kennel, ada: handinger.Handinger
) -> None:
    worker = ada.workers.create()
    task_id = new_task_id()
    result = ada.tasks.create(
        input="Describe a corgi in one line", worker_id=worker.id, task_id=task_id
    )

    raw = ada.tasks.with_raw_response.retrieve(task_id)
    found = raw.parse()
    assert isinstance(found, TaskWithTurns)
    task = found.task
    assert (task.id, task.worker_id, task.status, task.triggered_by) == (
        task_id,
        worker.id,
        "completed",
        "api",
    )
    assert task.organization_id == worker.organization_id
    assert task.created_by_user_id == worker.user_id
    assert task.title == "Describe a corgi in one line" == result.metadata["taskTitle"]
    assert task.url == f"{kennel.base_url}/worker/{worker.id}/task/{task_id}"
    assert is_iso(task.created_at) and is_iso(task.completed_at)
    assert task.totals.turn_count == 1 and task.totals.credits >= 1
    [turn] = found.turns
    assert turn.id == result.metadata["turnId"] and turn.task_id == task_id
    assert (turn.seq, turn.role, turn.status) == (0, "user", "completed")
    assert (turn.input, turn.output_text) == (
        "Describe a corgi in one line",
        "echo: Describe a corgi in one line",
    )
    assert turn.input_tokens > 0 and turn.output_tokens > 0 and turn.structured_output is None
    assert is_iso(turn.started_at) and is_iso(turn.completed_at)
    # 0.18 types the totals as floats, later SDKs as integers: integers satisfy both.
    body = raw.json()
    assert isinstance(body, dict)
    assert all(isinstance(value, int) for value in body["task"]["totals"].values())
    assert isinstance(body["turns"][0]["credits"], int)


def test_an_archived_task_stays_readable_and_takes_no_new_turns(ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    task_id = new_task_id()
    ada.tasks.create(input="something to archive", worker_id=worker.id, task_id=task_id)

    raw = ada.tasks.with_raw_response.delete(task_id)
    assert raw.http_request.content == b""
    archived = raw.parse()
    assert isinstance(archived, DeleteTaskResponse) and archived.archived is True

    assert ada.tasks.retrieve(task_id).task.status == "completed"
    refusal(
        handinger.ConflictError,
        409,
        "conflict",
        lambda: ada.tasks.create(input="one more thing", task_id=task_id),
    )
    assert len(ada.tasks.retrieve(task_id).turns) == 1
    listed = listing(ada, "/api/tasks", workerId=worker.id)
    assert task_id not in {item["id"] for item in listed["data"]}


def test_structured_output(ada: handinger.Handinger, llm: FakeLLM) -> None:
    worker = ada.workers.create(instructions="Report the weather.", output_schema=SCHEMA)
    llm.script(
        "weather in Barcelona",
        tool_calls(ToolCall("final_result", {"city": "Barcelona", "celsius": 21})),
    )
    task_id = new_task_id()
    result = ada.tasks.create(
        input="What is the weather in Barcelona?", worker_id=worker.id, task_id=task_id
    )

    assert result.structured_output == {"city": "Barcelona", "celsius": 21}
    assert json.loads(result.output_text) == {"city": "Barcelona", "celsius": 21}
    [turn] = ada.tasks.retrieve(task_id).turns
    assert turn.structured_output == {"city": "Barcelona", "celsius": 21}


def test_a_failed_run_is_a_completed_worker_with_the_error_in_metadata(
    ada: handinger.Handinger, llm: FakeLLM
) -> None:
    llm.fail("explode", 400, "secret provider detail")
    task_id = new_task_id()
    result = ada.tasks.create(input="explode, please", task_id=task_id)

    assert (result.status, result.running, result.error, result.incomplete_details) == (
        "completed",
        False,
        None,
        None,
    )
    error = result.metadata["error"]
    assert isinstance(error, dict) and error["code"] == "provider_error"
    assert "secret" not in json.dumps(result.model_dump())
    assert ada.tasks.retrieve(task_id).task.status == "error"


def test_uploaded_files_are_listed_and_served_byte_for_byte(
    kennel: Kennel, ada: handinger.Handinger, eve: handinger.Handinger
) -> None:
    worker = ada.workers.create()
    task_id = new_task_id()
    contents = {"notes.txt": "Ünïcode notes\n".encode(), "data/blob.bin": bytes(range(256)) * 4}
    result = upload(
        ada,
        {"input": "Read the attached files", "workerId": worker.id, "taskId": task_id},
        [
            ("files", ("notes.txt", contents["notes.txt"], "text/plain")),
            ("files[]", ("data/blob.bin", contents["data/blob.bin"], "application/octet-stream")),
        ],
    )

    assert isinstance(result, Worker)
    # The model was told about both files, after the input.
    text, note = result.output_text.split("\n", 1)
    assert text == "echo: Read the attached files"
    assert [(file["path"], file["mediaType"], file["sizeBytes"]) for file in listed(note)] == [
        ("notes.txt", "text/plain", len(contents["notes.txt"])),
        ("data/blob.bin", "application/octet-stream", len(contents["data/blob.bin"])),
    ]
    files = {file.filename: file for file in result.files}
    assert set(files) == set(contents)
    assert files["notes.txt"].media_type == "text/plain"
    assert files["data/blob.bin"].media_type == "application/octet-stream"
    for name, data in contents.items():
        file = files[name]
        assert file.model_extra == {"size": len(data)}  # `size` is typed from SDK 0.23 on
        assert file.url == f"{kennel.base_url}/api/workers/{worker.id}/files/{name}"
        assert ada.get(file.url, cast_to=bytes) == data
        assert httpx.get(file.url, timeout=10).status_code == 401
        refusal(
            handinger.NotFoundError,
            404,
            "not_found",
            lambda url=file.url: eve.get(url, cast_to=bytes),
        )

    follow_up = ada.tasks.create(input="And now?", task_id=task_id)
    assert {file.filename for file in follow_up.files} == set(contents)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b"])
def test_upload_names_that_leave_the_workspace_are_refused(
    ada: handinger.Handinger, name: str
) -> None:
    task_id = new_task_id()
    message = refusal(
        handinger.BadRequestError,
        400,
        "invalid_request",
        lambda: upload(
            ada,
            {"input": "store this", "taskId": task_id},
            [("files", (name, b"escape", "text/plain"))],
        ),
    )
    assert name in message
    refusal(handinger.NotFoundError, 404, "not_found", lambda: ada.tasks.retrieve(task_id))


def test_an_upload_over_the_file_limit_is_413(ada: handinger.Handinger) -> None:
    task_id = new_task_id()
    refusal(
        handinger.APIStatusError,
        413,
        "payload_too_large",
        lambda: upload(
            ada,
            {"input": "store this", "taskId": task_id},
            [("files", ("big.bin", b"x" * (UPLOAD_LIMIT + 1), "application/octet-stream"))],
        ),
    )
    refusal(handinger.NotFoundError, 404, "not_found", lambda: ada.tasks.retrieve(task_id))


def test_whitespace_keep_alive_outlasts_the_client_read_timeout(
    ada: handinger.Handinger, llm: FakeLLM
) -> None:
    # The model takes 3 s, the client gives up after 2 s of silence: only the server's
    # keep-alive (every second here) lets the call succeed.
    llm.script("take your time", Sleep(3, Text("worth the wait")))
    result = ada.tasks.create(input="take your time, please", timeout=2)
    assert result.output_text == "worth the wait" and result.status == "completed"


def test_a_client_that_gives_up_does_not_cancel_the_run(
    ada: handinger.Handinger, llm: FakeLLM
) -> None:
    llm.script("slow research", Sleep(2, Text("finished anyway")))
    task_id = new_task_id()
    # Shorter than the keep-alive interval, so the client times out while the turn runs.
    with pytest.raises(handinger.APITimeoutError):
        ada.tasks.create(input="slow research on dogs", task_id=task_id, timeout=0.5)

    done = poll_task(ada, task_id)
    assert done.task.status == "completed"
    assert [turn.output_text for turn in done.turns] == ["finished anyway"]


async def test_the_async_client_speaks_the_same_api(kennel: Kennel, llm: FakeLLM) -> None:
    llm.script("hello from asyncio", Text("hello from the kennel"))
    async with kennel.async_client(ADA) as client:
        worker = await client.workers.create(title="Async Rex")
        results = await asyncio.gather(
            *(
                client.tasks.create(input=f"hello from asyncio {n}", worker_id=worker.id)
                for n in range(3)
            )
        )
        assert [result.output_text for result in results] == ["hello from the kennel"] * 3
        task_ids = {str(result.metadata["taskId"]) for result in results}
        assert len(task_ids) == 3

        found = await client.tasks.retrieve(task_ids.pop())
        assert isinstance(found, TaskWithTurns) and found.task.worker_id == worker.id
        state = await client.workers.retrieve(worker.id)
        assert isinstance(state, Worker) and state.status == "completed"
        assert (await client.tasks.delete(found.task.id)).archived is True
        email = await client.workers.retrieve_email(worker.id)
        assert email.email == f"{worker.id}@{EMAIL_DOMAIN}"
        updated = await client.workers.update(worker.id, summary="Says hello")
        assert updated.summary == "Says hello"
        assert (await client.workers.delete(worker.id)).deleted is True
        with pytest.raises(handinger.NotFoundError):
            await client.workers.retrieve(worker.id)


# ---------------------------------------------------------------------------------------------
# Errors


def test_requests_without_a_valid_key_are_401(kennel: Kennel) -> None:
    for headers in ({}, {"Authorization": "Basic YWRhOnNlY3JldA=="}, {"Authorization": "Bearer"}):
        response = kennel.http("GET", "/api/workers", who=None, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert response.headers["x-should-retry"] == "false"
    with kennel.client(ADA, api_key="hdg_not-a-key") as stranger:
        refusal(
            handinger.AuthenticationError, 401, "unauthorized", lambda: stranger.workers.create()
        )


def test_only_the_creator_changes_a_worker_or_archives_its_tasks(
    ada: handinger.Handinger, bob: handinger.Handinger
) -> None:
    worker = ada.workers.create(title="Shared Rex")
    mine = ada.tasks.create(input="ada's question", worker_id=worker.id)
    # Any member may use a public worker...
    theirs = bob.tasks.create(input="bob's question", worker_id=worker.id)
    assert theirs.output_text == "echo: bob's question"
    assert bob.workers.retrieve(worker.id).id == worker.id

    # ...but only its creator may change it or archive its tasks.
    for call in (
        lambda: bob.workers.update(worker.id, title="Bob's now"),
        lambda: bob.workers.delete(worker.id),
        lambda: bob.tasks.delete(str(mine.metadata["taskId"])),
        lambda: bob.tasks.delete(str(theirs.metadata["taskId"])),
    ):
        refusal(handinger.PermissionDeniedError, 403, "forbidden", call)
    assert ada.workers.update(worker.id).title == "Shared Rex"
    assert ada.tasks.retrieve(str(mine.metadata["taskId"])).task.status == "completed"


def test_other_organizations_see_nothing(
    ada: handinger.Handinger, eve: handinger.Handinger
) -> None:
    worker = ada.workers.create()
    task_id = new_task_id()
    ada.tasks.create(input="acme business", worker_id=worker.id, task_id=task_id)

    for call in (
        lambda: eve.workers.retrieve(worker.id),
        lambda: eve.workers.update(worker.id, title="Mine"),
        lambda: eve.workers.delete(worker.id),
        lambda: eve.workers.retrieve_email(worker.id),
        lambda: eve.tasks.retrieve(task_id),
        lambda: eve.tasks.delete(task_id),
        lambda: eve.tasks.create(input="let me in", worker_id=worker.id),
    ):
        refusal(handinger.NotFoundError, 404, "not_found", call)

    # Task ids are per organization (spec §16.10): the same id is a new task of Eve's.
    hers = eve.tasks.create(input="umbrella business", task_id=task_id)
    assert hers.id != worker.id and hers.metadata["taskId"] == task_id
    assert [turn.input for turn in ada.tasks.retrieve(task_id).turns] == ["acme business"]


def test_a_private_worker_is_hidden_from_other_members(
    ada: handinger.Handinger, bob: handinger.Handinger
) -> None:
    worker = ada.workers.create(visibility="private")
    task_id = new_task_id()
    ada.tasks.create(input="private business", worker_id=worker.id, task_id=task_id)

    for call in (
        lambda: bob.workers.retrieve(worker.id),
        lambda: bob.workers.update(worker.id, title="Seen it"),
        lambda: bob.workers.delete(worker.id),
        lambda: bob.workers.retrieve_email(worker.id),
        lambda: bob.tasks.retrieve(task_id),
        lambda: bob.tasks.delete(task_id),
        lambda: bob.tasks.create(input="let me in", worker_id=worker.id),
        lambda: bob.tasks.create(input="let me in", task_id=task_id),
    ):
        refusal(handinger.NotFoundError, 404, "not_found", call)
    assert task_id not in {item["id"] for item in listing(bob, "/api/tasks")["data"]}
    assert task_id in {item["id"] for item in listing(ada, "/api/tasks")["data"]}


# Each call receives the SDK client and the id of a worker Ada created.
INVALID_REQUESTS: dict[str, tuple[Callable[[handinger.Handinger, str], object], str]] = {
    "task without input": (lambda c, w: c.post("/api/tasks", cast_to=Worker, body={}), "input"),
    "empty input": (lambda c, w: c.tasks.create(input=""), "input"),
    "input not a string": (lambda c, w: c.tasks.create(input=42), "input"),  # type: ignore[arg-type]
    "unknown budget": (lambda c, w: c.tasks.create(input="x", budget="huge"), "budget"),  # type: ignore[arg-type]
    "stream not a boolean": (lambda c, w: c.tasks.create(input="x", stream="maybe"), "stream"),  # type: ignore[arg-type]
    "task id with a space": (lambda c, w: c.tasks.create(input="x", task_id="a b"), "taskId"),
    "title too long": (lambda c, w: c.workers.create(title="x" * 201), "title"),
    "empty title": (lambda c, w: c.workers.create(title=""), "title"),
    "summary too long": (lambda c, w: c.workers.create(summary="x" * 81), "summary"),
    "prompt too long": (lambda c, w: c.workers.create(prompt="x" * 10_001), "prompt"),
    "instructions too long": (
        lambda c, w: c.workers.create(instructions="x" * 20_001),
        "instructions",
    ),
    "unknown visibility": (lambda c, w: c.workers.create(visibility="secret"), "visibility"),  # type: ignore[arg-type]
    "schema not an object": (lambda c, w: c.workers.create(output_schema="x"), "outputSchema"),  # type: ignore[arg-type]
    "schema of an array": (
        lambda c, w: c.workers.create(output_schema={"type": "array"}),
        "outputSchema",
    ),
    "title set to null": (lambda c, w: c.workers.update(w, title=None), "title"),  # type: ignore[arg-type]
    "title updated too long": (lambda c, w: c.workers.update(w, title="x" * 201), "title"),
    "page zero": (
        lambda c, w: c.get("/api/workers", cast_to=object, options={"params": {"page": 0}}),
        "page",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_REQUESTS))
def test_invalid_fields_are_400(ada: handinger.Handinger, case: str) -> None:
    call, field = INVALID_REQUESTS[case]
    worker = ada.workers.create(title="Target")
    message = refusal(
        handinger.BadRequestError, 400, "invalid_request", lambda: call(ada, worker.id)
    )
    assert field in message
    assert ada.workers.update(worker.id).title == "Target"


def test_malformed_json_is_400(kennel: Kennel, ada: handinger.Handinger) -> None:
    worker = ada.workers.create()
    json_type = {"Content-Type": "application/json"}
    for method, path in (
        ("POST", "/api/tasks"),
        ("POST", "/api/workers"),
        ("PATCH", f"/api/workers/{worker.id}"),
    ):
        response = kennel.http(method, path, content=b'{"input": ', headers=json_type)
        assert response.status_code == 400
        assert response.json() == {"error": response.json()["error"], "code": "malformed_json"}
        assert response.headers["x-should-retry"] == "false"
        response = kennel.http(method, path, content=b'["input"]', headers=json_type)
        assert response.status_code == 400 and response.json()["code"] == "invalid_request"


def test_a_task_id_of_another_worker_is_409_and_not_retried(
    kennel: Kennel, ada: handinger.Handinger
) -> None:
    first, second = ada.workers.create(), ada.workers.create()
    task_id = new_task_id()
    ada.tasks.create(input="on the first worker", worker_id=first.id, task_id=task_id)

    # The SDK retries 409s unless the server says otherwise: give it the chance to.
    sent: list[httpx.Request] = []
    http_client = httpx.Client(event_hooks={"request": [sent.append]})
    with kennel.client(ADA, max_retries=2, http_client=http_client) as client:
        refusal(
            handinger.ConflictError,
            409,
            "conflict",
            lambda: client.tasks.create(input="hijack", worker_id=second.id, task_id=task_id),
        )
    assert len(sent) == 1
    assert [turn.input for turn in ada.tasks.retrieve(task_id).turns] == ["on the first worker"]


@pytest.mark.parametrize("path", ["/api/workers", "/api/tasks"])
def test_internal_errors_leak_nothing(kennel: Kennel, path: str) -> None:
    # An out-of-range page number once made the server fail inside (an OverflowError in the
    # store). Whatever the status, the body must not carry a trace or a driver error.
    response = kennel.http("GET", path, params={"page": 10**20})
    assert response.status_code >= 400
    assert set(response.json()) == {"error", "code"}
    for leak in ("Traceback", "OverflowError", "sqlite", 'File "', "kennel/"):
        assert leak not in response.text


@pytest.mark.parametrize("path", ["/api/workers", "/api/tasks"])
def test_an_out_of_range_page_is_400(ada: handinger.Handinger, path: str) -> None:
    refusal(
        handinger.BadRequestError,
        400,
        "invalid_request",
        lambda: ada.get(path, cast_to=object, options={"params": {"page": 10**20}}),
    )
