"""Workers described in plain words (issue 3, spec §3.1): `POST /api/workers` with a `prompt`
and no `instructions` has the model write them, a summary, and a schema when fields are asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fakellm import FakeLLM, Text, ToolCall, tool_calls
from kennelapp import Api, kennel_api, settings_for

INVOICE_SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
    "required": ["vendor", "total"],
}


@pytest.fixture
async def api(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Api]:
    async with kennel_api(settings_for(tmp_path, llm)) as running:
        yield running


def _design(**fields: Any) -> Any:
    return tool_calls(ToolCall("final_result", fields))


async def _create(api: Api, **body: Any) -> Any:
    response = await api.client.post("/api/workers", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_prompt_becomes_instructions_and_a_summary(api: Api, llm: FakeLLM) -> None:
    llm.script(
        "Watch competitor prices",
        _design(
            instructions="You monitor the prices of our competitors every day.",
            summary="Monitors competitor prices daily",
            output_schema=None,
        ),
    )
    worker = await _create(api, prompt="Watch competitor prices and tell me when they drop.")
    assert worker["instructions"] == "You monitor the prices of our competitors every day."
    assert worker["summary"] == "Monitors competitor prices daily"
    assert worker["outputSchema"] is None
    [request] = llm.requests
    assert "You set up AI workers" in str(request["messages"][0]["content"])


async def test_an_extraction_prompt_gets_an_output_schema_that_tasks_then_follow(
    api: Api, llm: FakeLLM
) -> None:
    llm.script(
        "Extract the vendor and total",
        _design(
            instructions="You read invoices and return their vendor and total.",
            summary="Extracts vendor and total from invoices",
            output_schema=INVOICE_SCHEMA,
        ),
    )
    worker = await _create(api, prompt="Extract the vendor and total from each invoice.")
    assert worker["outputSchema"] == INVOICE_SCHEMA

    llm.script("ACME invoice", _design(vendor="ACME", total=12.5))
    response = await api.client.post(
        "/api/tasks", json={"input": "ACME invoice, 12.50 due", "workerId": worker["id"]}
    )
    assert response.json()["structured_output"] == {"vendor": "ACME", "total": 12.5}


async def test_a_bad_schema_from_the_model_is_dropped(api: Api, llm: FakeLLM) -> None:
    llm.script(
        "List the fields",
        _design(
            instructions="You list fields.",
            summary="A summary far too long to be one: " + "it goes on and on " * 5,
            output_schema={"type": "no-such-type"},
        ),
    )
    worker = await _create(api, prompt="List the fields of the form.")
    assert worker["outputSchema"] is None
    assert len(worker["summary"]) == 80 and worker["summary"].endswith("…")


async def test_without_a_usable_answer_the_prompt_is_the_instructions(
    api: Api, llm: FakeLLM
) -> None:
    llm.script("Plain words", Text("I would rather chat."))  # never a design
    prompt = "Plain words only. Nothing else matters."
    worker = await _create(api, prompt=prompt)
    assert (worker["instructions"], worker["summary"]) == (prompt, "Plain words only")
    assert len(llm.requests) == 3  # asked, then re-asked twice


async def test_without_a_model_the_prompt_is_the_instructions(tmp_path: Path) -> None:
    async with kennel_api(settings_for(tmp_path, None)) as api:
        worker = await _create(api, prompt="Summarise the news. Daily.")
        assert (worker["instructions"], worker["summary"]) == (
            "Summarise the news. Daily.",
            "Summarise the news",
        )


async def test_given_instructions_are_kept_verbatim(api: Api, llm: FakeLLM) -> None:
    worker = await _create(
        api, prompt="Anything at all", instructions="Answer in French. Be brief."
    )
    assert worker["instructions"] == "Answer in French. Be brief."
    assert worker["summary"] == "Anything at all"  # from the description: no model asked
    assert llm.requests == []
    instructed = await _create(api, instructions="Answer in French. Be brief.")
    assert instructed["summary"] == "Answer in French"  # derived from the instructions
    explicit = await _create(api, instructions="Answer in French.", summary="")
    assert explicit["summary"] == ""


async def test_writing_instructions_is_billed_to_the_organization(api: Api, llm: FakeLLM) -> None:
    principal = await api.kennel.services.auth.authenticate(f"Bearer {api.key}")
    await api.kennel.store.auth.set_credit_balance(principal.organization_id, 100)
    llm.script("Bill me", _design(instructions="You bill.", summary="Bills", output_schema=None))
    await _create(api, prompt="Bill me for this worker.")
    organization = await api.kennel.store.auth.get_organization(principal.organization_id)
    assert organization.credit_balance is not None and organization.credit_balance < 100
