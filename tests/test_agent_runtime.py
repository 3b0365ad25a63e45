"""The agent runtime against the fake OpenAI-compatible server: the real provider code path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessagesTypeAdapter

from aisdk import validate_ui_messages, validate_ui_stream
from fakellm import FakeLLM, Text, ToolCall, tool_calls
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime, TurnRequest
from kennel.config import Settings
from kennel.errors import ModelNotConfiguredError
from kennel.models import BUDGET_CAPS, Budget, BudgetCaps


def _request(text: str, **changes: Any) -> TurnRequest:
    values: dict[str, Any] = {
        "model_name": "openai-chat:fake-model",
        "instructions": "You are Rex.",
        "output_schema": None,
        "input": text,
        "history": [],
        "caps": BUDGET_CAPS[Budget.STANDARD],
        "message_id": "trn_1",
    }
    values.update(changes)
    return TurnRequest(**values)


def _sse(chunks: list[dict[str, Any]]) -> str:
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


async def test_a_plain_turn_streams_text_and_reports_usage(
    runtime: AgentRuntime, llm: FakeLLM, live: bool
) -> None:
    chunks: list[dict[str, Any]] = []
    result = await runtime.run_turn(_request("hello there", live=live), chunks.append)

    assert result.error is None and result.output_text == "echo: hello there"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.usage.requests == 1
    assert chunks[0] == {"type": "start", "messageId": "trn_1"}
    assert chunks[-1]["type"] == "finish"
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "echo: hello there"
    assert llm.requests[0]["messages"][0] == {"role": "system", "content": "You are Rex."}
    assert ModelMessagesTypeAdapter.validate_json(result.model_messages)
    assert result.ui_message["parts"][-1] == {
        "type": "text",
        "text": "echo: hello there",
        "state": "done",
    }


async def test_history_reaches_the_model(runtime: AgentRuntime, llm: FakeLLM, live: bool) -> None:
    first = await runtime.run_turn(_request("my name is Ada", live=live), lambda chunk: None)
    await runtime.run_turn(
        _request("what is my name?", history=[first.model_messages], live=live), lambda chunk: None
    )
    sent = [m.get("content") for m in llm.requests[-1]["messages"]]
    assert sent == ["You are Rex.", "my name is Ada", "echo: my name is Ada", "what is my name?"]


async def test_structured_output_is_validated_and_re_asked(
    runtime: AgentRuntime, llm: FakeLLM, live: bool
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
        "required": ["city", "celsius"],
    }
    llm.script(
        "weather",
        tool_calls(ToolCall("final_result", {"city": "Barcelona", "celsius": "warm"})),
        tool_calls(ToolCall("final_result", {"city": "Barcelona", "celsius": 21})),
    )
    result = await runtime.run_turn(
        _request("weather in Barcelona?", output_schema=schema, live=live), lambda chunk: None
    )
    assert result.error is None
    assert result.structured_output == {"city": "Barcelona", "celsius": 21}
    assert json.loads(result.output_text) == {"city": "Barcelona", "celsius": 21}
    retry = llm.requests[-1]["messages"][-1]
    assert retry["role"] == "tool" and "celsius" in retry["content"]


async def test_provider_failure_is_classified_and_ends_the_stream(
    runtime: AgentRuntime, llm: FakeLLM, live: bool
) -> None:
    llm.fail("explode", 500, "secret internal detail")
    chunks: list[dict[str, Any]] = []
    result = await runtime.run_turn(_request("explode now", live=live), chunks.append)
    assert result.error is not None and result.error.code == "provider_error"
    assert "secret" not in result.error.message
    assert result.model_messages is None
    errors = [c for c in chunks if c["type"] == "error"]
    assert errors == [{"type": "error", "errorText": result.error.message}]
    assert chunks[-1] == {"type": "finish", "finishReason": "error"}


async def test_budget_cap_completes_with_what_it_has(
    runtime: AgentRuntime, llm: FakeLLM, live: bool
) -> None:
    llm.script("loop", tool_calls(ToolCall("nonexistent", {})))
    chunks: list[dict[str, Any]] = []
    result = await runtime.run_turn(
        _request(
            "loop forever", caps=BudgetCaps(requests=1, tool_calls=None, tokens=None), live=live
        ),
        chunks.append,
    )
    assert result.error is None and result.incomplete_reason == "budget_exhausted"
    assert result.usage.requests == 1
    assert not [c for c in chunks if c["type"] == "error"]
    assert chunks[-1] == {"type": "finish", "finishReason": "length"}


async def test_titles_come_from_the_model(runtime: AgentRuntime) -> None:
    title, usage = await runtime.title_for("openai-chat:fake-model", "what is the weather in Oslo")
    assert title == "what is the weather in"
    assert usage.input_tokens > 0


async def test_an_unusable_model_name_is_a_clear_error() -> None:
    catalog = ModelCatalog(Settings(model="nonsense:thing"))
    with pytest.raises(ModelNotConfiguredError, match="KENNEL_MODEL='nonsense:thing'"):
        await catalog.check(None)
    with pytest.raises(ModelNotConfiguredError, match="set KENNEL_MODEL"):
        await ModelCatalog(Settings()).check(None)


@pytest.mark.node
async def test_turn_chunks_pass_the_ai_sdk(runtime: AgentRuntime, llm: FakeLLM, live: bool) -> None:
    llm.script("tool please", tool_calls(ToolCall("nonexistent", {"q": 1})), Text("done now"))
    chunks: list[dict[str, Any]] = []
    result = await runtime.run_turn(_request("tool please", live=live), chunks.append)
    check = validate_ui_stream(_sse(chunks))
    assert check.ok, check.error
    assert check.messages[-1]["parts"] == result.ui_message["parts"]
    assert validate_ui_messages([result.ui_message]).ok


async def test_quiet_and_live_runs_leave_the_same_message(
    runtime: AgentRuntime, llm: FakeLLM
) -> None:
    llm.script("compare", tool_calls(ToolCall("nonexistent", {"q": 1})), Text("all done here"))
    results = [
        await runtime.run_turn(_request("compare", live=live), lambda chunk: None)
        for live in (True, False)
    ]

    def shape(message: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(p["type"], p.get("text") or p.get("state")) for p in message["parts"]]

    live_message, quiet_message = (result.ui_message for result in results)
    assert shape(live_message) == shape(quiet_message)
    assert shape(quiet_message) == [
        ("step-start", None),
        ("tool-nonexistent", "output-error"),
        ("step-start", None),
        ("text", "all done here"),
    ]
    assert results[0].usage.requests == results[1].usage.requests == 2
