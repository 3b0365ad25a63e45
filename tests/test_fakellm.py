from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
)
from pydantic_ai import Agent, AgentRunResultEvent, FunctionToolResultEvent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from fakellm import Drip, FakeLLM, Sleep, Text, ToolCall, ToolCalls, tool_calls

WEATHER_CALL = ToolCall("get_weather", {"city": "Paris"}, id="call_weather")


@pytest.fixture
def client(llm: FakeLLM) -> Iterator[OpenAI]:
    with OpenAI(base_url=llm.base_url, api_key="test", max_retries=0) as sync_client:
        yield sync_client


@pytest.fixture
async def aclient(llm: FakeLLM) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=llm.base_url, api_key="test", max_retries=0) as async_client:
        yield async_client


def user(text: str | list[dict[str, str]]) -> dict[str, Any]:
    return {"role": "user", "content": text}


def ask(client: OpenAI, *messages: Any) -> ChatCompletion:
    return client.chat.completions.create(model="fake", messages=list(messages))


async def stream_chunks(aclient: AsyncOpenAI, *messages: Any) -> list[ChatCompletionChunk]:
    stream = await aclient.chat.completions.create(
        model="fake",
        messages=list(messages),
        stream=True,
        stream_options={"include_usage": True},
    )
    async with stream:
        return [chunk async for chunk in stream]


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tool_call_pieces(
    chunks: list[ChatCompletionChunk],
) -> list[tuple[int, str | None, str | None, str]]:
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    functions = [(d, d.function) for d in deltas if d.function is not None]
    return [(d.index, d.id, f.name, f.arguments or "") for d, f in functions]


def tool_round_trip(question: str, call_id: str) -> list[dict[str, Any]]:
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    return [
        user(question),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]


def test_models_endpoint(client: OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["fake-llm"]


def test_default_reply_echoes_last_user_message_with_usage(client: OpenAI) -> None:
    reply = ask(client, user("first"), {"role": "assistant", "content": "ok"}, user("hello there"))

    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 4)
    assert reply.usage.total_tokens == 8


def test_tool_call_round_trip_non_streaming(llm: FakeLLM, client: OpenAI) -> None:
    llm.script("weather", tool_calls(WEATHER_CALL), Text("It is sunny in Paris."))

    first = ask(client, user("What is the weather?"))
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert (call.id, call.function.name) == ("call_weather", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert first.usage is not None and first.usage.completion_tokens == 4

    second = ask(client, *tool_round_trip("What is the weather?", call.id))
    assert second.choices[0].message.content == "It is sunny in Paris."


def test_step_index_past_the_end_reuses_last_reply(llm: FakeLLM, client: OpenAI) -> None:
    llm.script("loop", tool_calls(WEATHER_CALL), Text("done"))
    messages = tool_round_trip("loop please", "a") + tool_round_trip("x", "b")[1:]

    assert ask(client, *messages).choices[0].message.content == "done"


def test_last_user_message_matches_before_first(llm: FakeLLM, client: OpenAI) -> None:
    llm.script("opening", Text("from the opening message"))
    llm.script("follow-up", Text("from the follow-up"))
    history = [user("opening"), {"role": "assistant", "content": "hi"}]

    assert ask(client, *history, user("follow-up")).choices[0].message.content == (
        "from the follow-up"
    )
    assert ask(client, *history, user("other")).choices[0].message.content == (
        "from the opening message"
    )


def test_content_parts_are_joined(llm: FakeLLM, client: OpenAI) -> None:
    llm.script("needle", Text("found"))
    parts = [{"type": "text", "text": "hay"}, {"type": "text", "text": "needle"}]

    assert ask(client, user(parts)).choices[0].message.content == "found"


def test_title_requests_get_a_title_unless_scripted_on_system_text(
    llm: FakeLLM, client: OpenAI
) -> None:
    llm.script("weather", Text("not a title"))
    system = {"role": "system", "content": "Write a short title for this conversation."}
    question = user("what is the weather like in Paris today")

    assert ask(client, system, question).choices[0].message.content == (
        "Title: what is the weather like"
    )
    llm.script("short title", Text("Custom title"))
    assert ask(client, system, question).choices[0].message.content == "Custom title"


def test_failure_injection_with_status_and_times(llm: FakeLLM, client: OpenAI) -> None:
    llm.fail("flaky", 503, "overloaded", times=1)
    llm.fail("broken", 400)

    with pytest.raises(openai.APIStatusError) as first:
        ask(client, user("flaky request"))
    assert first.value.status_code == 503
    assert first.value.body == {"message": "overloaded", "type": "server_error", "code": None}
    assert ask(client, user("flaky request")).choices[0].message.content == "echo: flaky request"
    for _ in range(2):
        with pytest.raises(openai.BadRequestError, match="boom"):
            ask(client, user("broken"))


def test_requests_are_recorded_and_reset(llm: FakeLLM, client: OpenAI) -> None:
    llm.script("scripted", Text("yes"))
    ask(client, user("scripted"))

    assert [r["messages"] for r in llm.requests] == [[user("scripted")]]
    llm.latency = 5.0
    llm.reset()
    assert llm.requests == []
    assert llm.latency == 0.0
    assert ask(client, user("scripted")).choices[0].message.content == "echo: scripted"


async def test_streaming_text_has_several_deltas_and_usage(
    llm: FakeLLM, aclient: AsyncOpenAI
) -> None:
    llm.script("story", Text("Once upon a time there was a fake model."))

    chunks = await stream_chunks(aclient, user("tell me a story"))

    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert streamed_text(chunks) == "Once upon a time there was a fake model."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 10)
    assert llm.requests[0]["stream_options"] == {"include_usage": True}


async def test_streaming_without_include_usage_sends_no_usage(aclient: AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async with stream:
        chunks = [chunk async for chunk in stream]

    assert all(chunk.usage is None and chunk.choices for chunk in chunks)


async def test_streaming_tool_calls_are_split_over_chunks(
    llm: FakeLLM, aclient: AsyncOpenAI
) -> None:
    search = ToolCall("search", {"query": "fake llm servers"})
    llm.script("weather", ToolCalls((WEATHER_CALL, search)), Text("sunny"))

    chunks = await stream_chunks(aclient, user("weather and search"))

    pieces = tool_call_pieces(chunks)
    assert len(pieces) == 4
    headers = [(index, call_id, name) for index, call_id, name, _ in pieces if call_id]
    assert headers[0] == (0, "call_weather", "get_weather")
    assert headers[1][0::2] == (1, "search") and str(headers[1][1]).startswith("call_")
    arguments = ["".join(args for index, *_, args in pieces if index == i) for i in (0, 1)]
    assert [json.loads(a) for a in arguments] == [{"city": "Paris"}, {"query": "fake llm servers"}]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    follow_up = await stream_chunks(aclient, *tool_round_trip("weather and search", "call_weather"))
    assert streamed_text(follow_up) == "sunny"


def test_latency_is_honoured(llm: FakeLLM, client: OpenAI) -> None:
    llm.latency = 0.3

    started = time.monotonic()
    ask(client, user("slow"))

    assert time.monotonic() - started >= 0.3


async def test_latency_and_sleep_are_honoured_when_streaming(
    llm: FakeLLM, aclient: AsyncOpenAI
) -> None:
    llm.latency = 0.2
    llm.script("nap", Sleep(0.3, Text("rested")))

    started = time.monotonic()
    chunks = await stream_chunks(aclient, user("nap"))

    assert time.monotonic() - started >= 0.5
    assert streamed_text(chunks) == "rested"


async def test_a_dripped_reply_streams_its_pieces_apart(llm: FakeLLM, aclient: AsyncOpenAI) -> None:
    llm.script("slowly", Drip(0.1, Text("one two three four")))
    stream = await aclient.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "slowly"}], stream=True
    )
    arrivals = []
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
    assert "".join(text for _, text in arrivals) == "one two three four"
    gaps = [later - earlier for (earlier, _), (later, _) in pairwise(arrivals)]
    assert len(gaps) == 3 and min(gaps) >= 0.09


def test_a_dripped_reply_answered_plainly_waits_for_all_its_pieces(
    llm: FakeLLM, client: OpenAI
) -> None:
    llm.script("slowly", Drip(0.1, Text("one two three")))
    started = time.monotonic()
    assert ask(client, user("slowly")).choices[0].message.content == "one two three"
    assert time.monotonic() - started >= 0.3


async def test_concurrent_requests_wait_in_parallel(llm: FakeLLM, aclient: AsyncOpenAI) -> None:
    llm.latency = 0.5

    async def one(number: int) -> str | None:
        reply = await aclient.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": f"request {number}"}]
        )
        return reply.choices[0].message.content

    started = time.monotonic()
    replies = await asyncio.gather(*(one(n) for n in range(100)))

    assert time.monotonic() - started < 10
    assert replies == [f"echo: request {n}" for n in range(100)]
    assert len(llm.requests) == 100


async def test_stop_wakes_pending_requests() -> None:
    server = FakeLLM().start()
    server.script("forever", Sleep(60, Text("never")))
    async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as slow:
        pending = asyncio.create_task(
            slow.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "forever"}]
            )
        )
        while not server.requests:
            await asyncio.sleep(0.01)

        started = time.monotonic()
        await asyncio.to_thread(server.stop)

        assert time.monotonic() - started < 5
        with pytest.raises(openai.APIStatusError) as stopped:
            await pending
        assert stopped.value.status_code == 503


def weather_agent(llm: FakeLLM) -> tuple[Agent[None, str], list[str]]:
    model = OpenAIChatModel(
        "gpt-4o", provider=OpenAIProvider(base_url=llm.base_url, api_key="test")
    )
    agent = Agent(model, instructions="You report the weather.")
    calls: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        calls.append(city)
        return f"sunny in {city}"

    llm.script("weather", tool_calls(WEATHER_CALL), Text("It is sunny in Paris."))
    return agent, calls


async def test_pydantic_ai_agent_run_calls_tool_then_answers(llm: FakeLLM) -> None:
    agent, calls = weather_agent(llm)

    async with agent:
        result = await agent.run("What is the weather in Paris?")

    assert calls == ["Paris"]
    assert result.output == "It is sunny in Paris."
    assert [r["stream"] for r in llm.requests] == [False, False]
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0


async def test_pydantic_ai_agent_streams_tool_call_then_answer(llm: FakeLLM) -> None:
    agent, calls = weather_agent(llm)

    async with agent, agent.run_stream_events("What is the weather in Paris?") as events:
        collected = [event async for event in events]

    assert calls == ["Paris"]
    [tool_result] = [e for e in collected if isinstance(e, FunctionToolResultEvent)]
    assert tool_result.part.content == "sunny in Paris"
    assert isinstance(collected[-1], AgentRunResultEvent)
    assert collected[-1].result.output == "It is sunny in Paris."
    assert all(r["stream_options"] == {"include_usage": True} for r in llm.requests)


def test_runs_as_a_script() -> None:
    script = Path(__file__).with_name("fakellm.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--latency", "0.1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:")
        reply = httpx.post(
            line.removeprefix("listening ") + "/v1/chat/completions",
            json={"model": "fake", "messages": [user("ping")]},
        )
        assert reply.json()["choices"][0]["message"]["content"] == "echo: ping"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()
