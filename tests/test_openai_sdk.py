"""The OpenAI SDK without its walks: it sends the same requests and reads the same answers as
without the shortcuts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import typing_extensions
from openai import AsyncOpenAI, omit
from openai._base_client import BaseClient
from openai._utils._transform import PropertyInfo
from openai.types.beta import response_create_params as beta_response_create_params
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from kennel.agent.models import ModelCatalog
from kennel.agent.openaisdk import as_they_are, skip_sdk_walks
from kennel.config import Settings

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": "a"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "text"},
]
CHAT_CALLS: list[dict[str, Any]] = [
    {"model": "m", "messages": MESSAGES},
    {"model": "m", "messages": MESSAGES, "tools": TOOLS, "tool_choice": "auto", "stream": False},
    {
        "model": "m",
        "messages": MESSAGES,
        "tools": TOOLS,
        "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {}}},
        "extra_body": {"tools": [], "custom": 1},
        "max_completion_tokens": 10,
    },
    {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    {"model": "m", "messages": iter(MESSAGES), "tools": (tool for tool in TOOLS)},
    {"model": "m", "messages": [{"role": "user", "content": ({"type": "text", "text": "hi"},)}]},
]
RESPONSES_CALLS: list[dict[str, Any]] = [
    {
        "model": "m",
        "input": [{"role": "user", "content": "hi"}],
        "instructions": "Be brief.",
        "tools": [
            {"type": "function", "name": "f", "parameters": {}, "strict": False},
        ],
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low"},
        "store": False,
    },
]


class _Recorder:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.paths: list[str] = []
        self.hosts: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content))
        self.paths.append(request.url.path)
        self.hosts.append(request.url.host)
        if request.url.path.endswith("/responses"):
            return httpx2.Response(200, json={"id": "r", "object": "response", "output": []})
        return httpx2.Response(200, json={"id": "c", "object": "chat.completion", "choices": []})


def _client(recorder: _Recorder) -> AsyncOpenAI:
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(recorder))
    return AsyncOpenAI(base_url="http://model.test/v1", api_key="k", http_client=http_client)


def _fresh(call: dict[str, Any]) -> dict[str, Any]:
    """The call again, with fresh iterators where it has some (an iterator is read once)."""
    fresh = dict(call)
    for name in ("messages", "tools"):
        if isinstance(call.get(name), Iterator):
            fresh[name] = iter({"messages": MESSAGES, "tools": TOOLS}[name])
    return fresh


@pytest.mark.parametrize("call", CHAT_CALLS)
async def test_chat_bodies_are_the_ones_the_sdk_sends(call: dict[str, Any]) -> None:
    plain, lean = _Recorder(), _Recorder()
    sdk, shortcut = _client(plain), _client(lean)
    skip_sdk_walks(shortcut)
    await sdk.chat.completions.create(**_fresh(call))
    await shortcut.chat.completions.create(**_fresh(call))
    assert lean.bodies == plain.bodies and len(plain.bodies) == 1
    assert lean.paths == plain.paths


@pytest.mark.parametrize("call", RESPONSES_CALLS)
async def test_responses_bodies_are_the_ones_the_sdk_sends(call: dict[str, Any]) -> None:
    plain, lean = _Recorder(), _Recorder()
    sdk, shortcut = _client(plain), _client(lean)
    skip_sdk_walks(shortcut)
    await sdk.responses.create(**call)
    await shortcut.responses.create(**call)
    assert lean.bodies == plain.bodies and len(plain.bodies) == 1


COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "logprobs": None,
            "message": {
                "role": "assistant",
                "content": "FAKEOK",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
                "provider_extra": {"kept": True},
            },
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}
CHUNKS = [
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}],
    }
    for text in ("FAKE", "OK")
] + [
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
]
ODD = {**COMPLETION, "created": "yesterday", "choices": [{"index": 0, "finish_reason": "?"}]}
"""An answer that fails validation: the SDK's lenient walk still reads it."""


def _answering(completion: dict[str, Any]) -> AsyncOpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        if not json.loads(request.content).get("stream"):
            return httpx2.Response(200, json=completion)
        events = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in CHUNKS)
        body = (events + "data: [DONE]\n\n").encode()
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    return AsyncOpenAI(base_url="http://model.test/v1", api_key="k", http_client=http_client)


async def _read(client: AsyncOpenAI) -> tuple[Any, list[Any]]:
    answer = await client.chat.completions.create(model="m", messages=MESSAGES)
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    return answer, [chunk async for chunk in stream]


@pytest.mark.parametrize("completion", [COMPLETION, ODD], ids=["valid", "odd"])
async def test_answers_are_the_ones_the_sdk_reads(completion: dict[str, Any]) -> None:
    shortcut = _answering(completion)
    skip_sdk_walks(shortcut)
    sdk_answer, sdk_chunks = await _read(_answering(completion))
    answer, chunks = await _read(shortcut)

    assert answer == sdk_answer and chunks == sdk_chunks
    assert answer.model_dump(warnings=False) == sdk_answer.model_dump(warnings=False)
    assert answer._request_id == sdk_answer._request_id
    assert "".join(chunk.choices[0].delta.content for chunk in chunks[:2]) == "FAKEOK"


async def test_valid_answers_skip_the_sdks_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    shortcut = _answering(COMPLETION)
    skip_sdk_walks(shortcut)

    def walk(**_kwargs: object) -> None:
        raise AssertionError("the SDK's construct walk ran")

    monkeypatch.setattr("openai._base_client.construct_type", walk)
    answer, chunks = await _read(shortcut)
    assert answer.choices[0].message.tool_calls[0].function.name == "f"
    assert len(chunks) == 3 and chunks[-1].usage.total_tokens == 5


async def test_a_client_merges_a_path_into_its_base_url_once_until_the_base_url_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merged: list[str] = []
    prepare = BaseClient._prepare_url

    def counted(self: BaseClient[Any, Any], url: str) -> httpx2.URL:
        merged.append(url)
        return prepare(self, url)

    monkeypatch.setattr(BaseClient, "_prepare_url", counted)
    lean = _Recorder()
    client = _client(lean)
    skip_sdk_walks(client)
    for _ in range(3):
        await client.chat.completions.create(**CHAT_CALLS[0])
    assert merged == ["/chat/completions"]
    client.base_url = "http://other.test/v2"
    await client.chat.completions.create(**CHAT_CALLS[0])
    assert merged == ["/chat/completions"] * 2
    assert lean.hosts == ["model.test"] * 3 + ["other.test"]
    assert lean.paths == ["/v1/chat/completions"] * 3 + ["/v2/chat/completions"]


def test_plain_fields_move_to_extra_body_and_the_rest_stays() -> None:
    messages = [{"role": "user", "content": "hi"}]
    odd = [{"role": "user", "content": iter(["hi"])}]  # not JSON: the SDK's walk reads it
    arguments = {
        "model": "m",
        "messages": messages,
        "tools": odd,
        "stream": True,
        "timeout": 5.0,
        "extra_body": {"x": 1},
    }
    moved = as_they_are(arguments)

    assert moved["extra_body"] == {"model": "m", "messages": messages, "x": 1}
    assert moved["tools"] is odd and moved["stream"] is True and moved["timeout"] == 5.0
    assert moved["messages"] is omit and moved["model"] is omit


def _property_infos(annotation: Any, seen: set[int]) -> Iterator[PropertyInfo]:
    """Every `PropertyInfo` reachable from a type annotation; `seen` collects what it visited."""
    if id(annotation) in seen:
        return
    seen.add(id(annotation))
    if typing_extensions.is_typeddict(annotation):
        hints = typing_extensions.get_type_hints(annotation, include_extras=True)
        for hint in hints.values():
            yield from _property_infos(hint, seen)
        return
    for argument in typing_extensions.get_args(annotation):
        if isinstance(argument, PropertyInfo):
            yield argument
        else:
            yield from _property_infos(argument, seen)


def _renamed_or_formatted(params: Any) -> tuple[list[PropertyInfo], int]:
    seen: set[int] = set()
    infos = [info for info in _property_infos(params, seen) if info.alias or info.format]
    return infos, len(seen)


def test_the_walk_finds_a_renamed_field() -> None:
    infos, _ = _renamed_or_formatted(beta_response_create_params.ResponseCreateParamsNonStreaming)
    assert [info.alias for info in infos] == ["openai-beta"]


@pytest.mark.parametrize(
    "params",
    [
        completion_create_params.CompletionCreateParamsNonStreaming,
        completion_create_params.CompletionCreateParamsStreaming,
        response_create_params.ResponseCreateParamsNonStreaming,
        response_create_params.ResponseCreateParamsStreaming,
    ],
)
def test_the_sdk_renames_and_formats_no_field_of_these_bodies(params: Any) -> None:
    infos, visited = _renamed_or_formatted(params)
    assert infos == []
    assert visited > 100  # the walk went through the messages, tools and their parts


@pytest.mark.parametrize("name", ["openai-chat:m", "openai:m", "openai-responses:m"])
async def test_the_models_kennel_builds_take_the_shortcut(name: str) -> None:
    catalog = ModelCatalog(Settings(openai_base_url="http://model.test/v1", openai_api_key="k"))
    try:
        model = await catalog.get(name)
        client = model.client  # type: ignore[attr-defined]
        assert as_they_are.__module__ == type(client.chat.completions).__module__
        assert as_they_are.__module__ == type(client.responses).__module__
    finally:
        await catalog.aclose()
