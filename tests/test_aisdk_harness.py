"""Prove the AI SDK harness (tests/aisdk.py) can both pass and fail.

A validator that accepts everything proves nothing, so each rejection the SDK
enforces and Kennel must respect is pinned here with a minimal stream, next to
a realistic stream that must pass. The multi-run tests also pin how the SDK
folds several assistant runs in one SSE response into messages, which task
stream replays rely on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aisdk import validate_ui_messages, validate_ui_stream

# No skip when node is missing: `make test` installs the SDK, and a suite that quietly stops
# checking streams would hide exactly the regressions it exists for.
pytestmark = pytest.mark.node

Chunk = dict[str, Any]


def sse(*items: Chunk | str) -> str:
    """Frame chunks as SSE events; a str item is written verbatim (ids, comments)."""
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        else:
            out.append(f"data: {json.dumps(item)}\n\n")
    return "".join(out)


DONE = "data: [DONE]\n\n"


def text_run(text: str, message_id: str | None = None, part_id: str = "t1") -> list[Chunk]:
    """One complete assistant run: start ... finish."""
    start: Chunk = {"type": "start"}
    if message_id is not None:
        start["messageId"] = message_id
    return [
        start,
        {"type": "start-step"},
        {"type": "text-start", "id": part_id},
        {"type": "text-delta", "id": part_id, "delta": text},
        {"type": "text-end", "id": part_id},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]


WELL_FORMED = sse(
    "id: 1\n",
    {"type": "start", "messageId": "msg_1"},
    "id: 2\n",
    {"type": "start-step"},
    ": ping\n\n",
    "id: 3\n",
    {"type": "text-start", "id": "txt_1"},
    "id: 4\n",
    {"type": "text-delta", "id": "txt_1", "delta": "Hello, "},
    "id: 5\n",
    {"type": "text-delta", "id": "txt_1", "delta": "wörld ✓"},
    "id: 6\n",
    {"type": "text-end", "id": "txt_1"},
    ": ping\n\n",
    "id: 7\n",
    {
        "type": "tool-input-available",
        "toolCallId": "call_1",
        "toolName": "web_search",
        "input": {"query": "kennel"},
        "providerExecuted": True,
    },
    "id: 8\n",
    {
        "type": "tool-output-available",
        "toolCallId": "call_1",
        "output": {"results": ["https://example.com"]},
        "providerExecuted": True,
    },
    "id: 9\n",
    {"type": "source-url", "sourceId": "src_1", "url": "https://example.com"},
    "id: 10\n",
    {"type": "data-worker", "data": {"status": "completed"}},
    "id: 11\n",
    {"type": "finish-step"},
    "id: 12\n",
    {"type": "finish", "finishReason": "stop"},
    DONE,
)


def test_well_formed_stream_builds_one_assistant_message() -> None:
    check = validate_ui_stream(WELL_FORMED)

    assert check.ok, check.error
    assert check.error is None
    assert [c["type"] for c in check.chunks] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "tool-input-available",
        "tool-output-available",
        "source-url",
        "data-worker",
        "finish-step",
        "finish",
    ]
    assert len(check.messages) == 1
    message = check.messages[0]
    assert message["id"] == "msg_1"
    assert message["role"] == "assistant"
    parts = message["parts"]
    assert [p["type"] for p in parts] == [
        "step-start",
        "text",
        "tool-web_search",
        "source-url",
        "data-worker",
    ]
    assert parts[1] == {"type": "text", "text": "Hello, wörld ✓", "state": "done"}
    assert parts[2] == {
        "type": "tool-web_search",
        "toolCallId": "call_1",
        "state": "output-available",
        "input": {"query": "kennel"},
        "output": {"results": ["https://example.com"]},
        "providerExecuted": True,
    }
    assert parts[4] == {"type": "data-worker", "data": {"status": "completed"}}


def test_messages_built_from_stream_pass_validate_ui_messages() -> None:
    built = validate_ui_stream(WELL_FORMED).messages
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}

    check = validate_ui_messages([user, *built])

    assert check.ok, check.error


def test_done_terminator_is_optional() -> None:
    with_done = validate_ui_stream(sse(*text_run("hi", "m1"), DONE))
    without_done = validate_ui_stream(sse(*text_run("hi", "m1")))

    assert with_done.ok and without_done.ok
    assert with_done.messages == without_done.messages


def test_done_is_skipped_not_a_terminator() -> None:
    """The SDK only ignores `[DONE]`; events after it are still applied."""
    check = validate_ui_stream(sse(*text_run("one", "m1"), DONE, *text_run("two", "m2")))

    assert check.ok, check.error
    assert [m["id"] for m in check.messages] == ["m1", "m2"]


def test_unterminated_last_event_is_silently_dropped() -> None:
    """An event needs its blank line; without it the SDK never sees the event."""
    body = sse({"type": "start", "messageId": "m1"}) + 'data: {"type":"text-start","id":"t"}\n'

    check = validate_ui_stream(body)

    assert check.ok
    assert [c["type"] for c in check.chunks] == ["start"]


@pytest.mark.parametrize(
    ("chunks", "expected_types", "error_fragment"),
    [
        pytest.param(
            [{"type": "start"}, {"type": "source-url", "sourceId": "s", "url": "u", "title": None}],
            ["start"],
            "received null",
            id="null-in-optional-key",
        ),
        pytest.param(
            [{"type": "start"}, {"type": "start", "messageId": None}],
            ["start"],
            "received null",
            id="null-message-id",
        ),
        pytest.param(
            [{"type": "start"}, {"type": "worker"}],
            ["start"],
            "TypeValidationError",
            id="unknown-chunk-type",
        ),
        pytest.param(
            [{"type": "start"}, {"type": "data-worker"}],
            ["start"],
            "TypeValidationError",
            id="data-chunk-without-data",
        ),
        pytest.param(
            [{"type": "start"}, {"type": "finish", "finishReason": "bogus"}],
            ["start"],
            "finishReason",
            id="bogus-finish-reason",
        ),
    ],
)
def test_schema_rejects(
    chunks: list[Chunk], expected_types: list[str], error_fragment: str
) -> None:
    check = validate_ui_stream(sse(*chunks, DONE))

    assert not check.ok
    assert check.error is not None
    assert "event #2 rejected" in check.error
    assert error_fragment in check.error
    assert [c["type"] for c in check.chunks] == expected_types
    assert check.messages == []


def test_invalid_json_is_rejected() -> None:
    check = validate_ui_stream(sse({"type": "start"}) + "data: {not json}\n\n")

    assert not check.ok
    assert check.error is not None
    assert "JSONParseError" in check.error
    assert check.chunks == [{"type": "start"}]


@pytest.mark.parametrize(
    ("chunks", "error_fragment"),
    [
        pytest.param(
            [
                {"type": "start"},
                {"type": "text-delta", "id": "never-started", "delta": "x"},
                {"type": "finish"},
            ],
            'Received text-delta for missing text part with ID "never-started"',
            id="text-delta-without-text-start",
        ),
        pytest.param(
            [
                {"type": "start"},
                {"type": "text-start", "id": "t1"},
                {"type": "text-end", "id": "t1"},
                {"type": "text-delta", "id": "t1", "delta": "late"},
            ],
            'Received text-delta for missing text part with ID "t1"',
            id="text-delta-after-text-end",
        ),
        pytest.param(
            [
                {"type": "start"},
                {"type": "tool-output-available", "toolCallId": "call_9", "output": 1},
                {"type": "finish"},
            ],
            'No tool invocation found for tool call ID "call_9"',
            id="tool-output-without-tool-input",
        ),
    ],
)
def test_state_machine_rejects(chunks: list[Chunk], error_fragment: str) -> None:
    check = validate_ui_stream(sse(*chunks, DONE))

    assert not check.ok
    assert check.error is not None
    assert "UIMessageStreamError" in check.error
    assert error_fragment in check.error
    # Every chunk passed the schema; the ordering is what the SDK refused.
    assert check.chunks == chunks


def test_in_band_error_chunk_is_valid_protocol() -> None:
    check = validate_ui_stream(
        sse({"type": "start", "messageId": "m1"}, {"type": "error", "errorText": "boom"}, DONE)
    )

    assert check.ok, check.error
    assert check.chunks[-1] == {"type": "error", "errorText": "boom"}


def test_two_runs_with_distinct_message_ids_become_two_messages() -> None:
    check = validate_ui_stream(sse(*text_run("one", "m1"), *text_run("two", "m2"), DONE))

    assert check.ok, check.error
    assert [(m["id"], m["role"]) for m in check.messages] == [
        ("m1", "assistant"),
        ("m2", "assistant"),
    ]
    texts = [[p["text"] for p in m["parts"] if p["type"] == "text"] for m in check.messages]
    assert texts == [["one"], ["two"]]


@pytest.mark.parametrize(
    ("first_id", "second_id", "merged_id"),
    [
        pytest.param(None, None, "", id="no-message-ids"),
        pytest.param("m1", "m1", "m1", id="same-message-id"),
        pytest.param("m1", None, "m1", id="second-start-without-id"),
    ],
)
def test_two_runs_without_a_new_message_id_merge_into_one_message(
    first_id: str | None, second_id: str | None, merged_id: str
) -> None:
    check = validate_ui_stream(sse(*text_run("one", first_id), *text_run("two", second_id), DONE))

    assert check.ok, check.error
    assert len(check.messages) == 1
    assert check.messages[0]["id"] == merged_id
    parts = check.messages[0]["parts"]
    assert [p["type"] for p in parts] == ["step-start", "text", "step-start", "text"]
    assert [p["text"] for p in parts if p["type"] == "text"] == ["one", "two"]


VALID_MESSAGES: list[dict[str, Any]] = [
    {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Find kennels"}]},
    {
        "id": "m1",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "text", "text": "Here you go", "state": "done"},
            {
                "type": "tool-web_search",
                "toolCallId": "call_1",
                "state": "output-available",
                "input": {"query": "kennels"},
                "output": {"results": []},
                "providerExecuted": True,
            },
            {"type": "source-url", "sourceId": "s1", "url": "https://example.com"},
            {"type": "data-worker", "data": {"status": "completed"}},
        ],
    },
]


def test_valid_ui_messages_pass() -> None:
    check = validate_ui_messages(VALID_MESSAGES)

    assert check.ok, check.error
    assert check.error is None


def test_null_optional_field_in_a_part_fails() -> None:
    messages = json.loads(json.dumps(VALID_MESSAGES))
    messages[1]["parts"][3]["title"] = None

    check = validate_ui_messages(messages)

    assert not check.ok
    assert check.error is not None
    assert "received null" in check.error


def test_empty_message_list_fails() -> None:
    check = validate_ui_messages([])

    assert not check.ok
    assert check.error is not None
    assert "must not be empty" in check.error
