"""A fake OpenAI-compatible Chat Completions server for tests and benchmarks.

`FakeLLM` serves `POST /v1/chat/completions` (plain JSON or SSE streaming) and
`GET /v1/models` on 127.0.0.1 from a background thread running uvicorn on its
own event loop. Latency is an `asyncio.sleep`, so hundreds of concurrent
requests wait in parallel.

Choosing a reply is stateless: it depends only on the request body, so
concurrent conversations never interfere.

1. Title side requests: when a `system` or `developer` message contains
   ``Write a short title``, only failures and scripts whose `match` is a
   substring of the system text apply. Otherwise the reply is
   ``Title: <first 5 words of the last user message>``.
2. Failures registered with `fail()` are checked next, then scripts registered
   with `script()`. Each kind is looked up in registration order, first against
   the LAST user message of the request, then, if none matched, against the
   FIRST user message (the conversation's opening message). Content given as a
   list of parts is reduced to its text parts joined by newlines.
3. A script answers with ``replies[k]``, where k is the number of `assistant`
   messages after the last user message: 0 for the first model call of a turn,
   1 after one tool round trip, and so on. Past the end, the last reply is
   reused. An `Echo()` reply stands for the unscripted answer below.
4. Without a matching script the reply is ``echo: <last user message>``.

Failures answer immediately, without latency. Every other reply waits
`FakeLLM.latency` seconds (read when the request arrives) plus the seconds of
any `Sleep` wrapping the reply. A `Drip` wrapping it streams it slowly, one
piece every so many seconds, so a reader can watch the answer arrive. A
streamed reply sends its headers at once and waits before the first chunk.
`stop()` wakes all waiting requests: plain ones answer 503, streamed ones end
without ``[DONE]``. `reset()` clears scripts,
failures and recorded requests and restores the latency given to the
constructor, so one server can be shared by a whole test session.

Usage is deterministic: prompt_tokens is a quarter of the characters of all
message contents, completion_tokens a quarter of the reply text or of the
tool-call arguments JSON, each at least 1.

The same replies are served in Anthropic's Messages API format on `POST /v1/messages` (plain
JSON or SSE), so `anthropic:<model>` runs against it with ``ANTHROPIC_BASE_URL`` set to the
server's root (`base_url` without ``/v1``). Its request is read as the equivalent chat: the
`system` prompt, then each message, where a user message made only of `tool_result` blocks
counts as tool output (not as a new user message). Tool calls become `tool_use` blocks.
Those requests are recorded in `anthropic_requests` (chat ones in `requests`).

Run ``python tests/fakellm.py --port 0 --latency 2.0 [--tool-first TOOL:MATCH]`` to serve until
killed (``--tool-first`` scripts a tool call with no arguments, then the echo);
it prints ``listening http://127.0.0.1:PORT`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

HOST = "127.0.0.1"
MODEL_ID = "fake-llm"
TITLE_MARKER = "Write a short title"
TITLE_WORDS = 5
START_TIMEOUT = 10.0

Json = dict[str, Any]


@dataclass(frozen=True)
class Text:
    """A plain assistant message."""

    content: str


@dataclass(frozen=True)
class ToolCall:
    """One function call; without an `id` each reply gets a fresh random ``call_...`` id."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class ToolCalls:
    """An assistant message calling one or more tools (``finish_reason: "tool_calls"``)."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Echo:
    """The reply the server gives without a script: ``echo: <last user message>``."""


@dataclass(frozen=True)
class Sleep:
    """Wait `seconds` on top of the server latency, then answer with `then`."""

    seconds: float
    then: Reply


@dataclass(frozen=True)
class Drip:
    """Stream `then` slowly: one piece (a word, or half of a tool call's arguments) every
    `seconds`. A plain (not streamed) answer waits as long as the pieces would take."""

    seconds: float
    then: Reply


Reply = Text | ToolCalls | Echo | Sleep | Drip


def tool_calls(*calls: ToolCall) -> ToolCalls:
    return ToolCalls(calls)


@dataclass(frozen=True)
class _Script:
    match: str
    replies: tuple[Reply, ...]

    def reply_at(self, step: int) -> Reply:
        return self.replies[min(step, len(self.replies) - 1)]


@dataclass(eq=False)
class _Failure:
    match: str
    status: int
    message: str
    remaining: int | None


_Rule = TypeVar("_Rule", _Script, _Failure)


@dataclass(frozen=True)
class _Conversation:
    first_user: str
    last_user: str
    system: str
    step: int
    prompt_chars: int

    @property
    def is_title_request(self) -> bool:
        return TITLE_MARKER in self.system


@dataclass(frozen=True)
class _Completion:
    id: str
    model: str
    created: int
    text: str | None
    calls: list[Json]
    usage: dict[str, int]

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.calls else "stop"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "\n".join(str(p.get("text", "")) for p in parts)
    return ""


def _read_conversation(messages: Sequence[Json]) -> _Conversation:
    texts = [_content_text(m.get("content")) for m in messages]
    roles = [m.get("role") for m in messages]
    users = [i for i, role in enumerate(roles) if role == "user"]
    last = users[-1] if users else -1
    return _Conversation(
        first_user=texts[users[0]] if users else "",
        last_user=texts[last] if users else "",
        system="\n".join(
            t for r, t in zip(roles, texts, strict=True) if r in ("system", "developer")
        ),
        step=roles[last + 1 :].count("assistant"),
        prompt_chars=sum(map(len, texts)),
    )


def _first_match(items: Sequence[_Rule], text: str) -> _Rule | None:
    return next((item for item in items if item.match in text), None)


def _match_conversation(items: Sequence[_Rule], convo: _Conversation) -> _Rule | None:
    if convo.is_title_request:
        return _first_match(items, convo.system)
    found = _first_match(items, convo.last_user)
    return found if found is not None else _first_match(items, convo.first_user)


def _default_reply(convo: _Conversation) -> Reply:
    if convo.is_title_request:
        return Text("Title: " + " ".join(convo.last_user.split()[:TITLE_WORDS]))
    return Text(f"echo: {convo.last_user}")


def _echoed(reply: Reply, convo: _Conversation) -> Reply:
    if isinstance(reply, Echo):
        return _default_reply(convo)
    if isinstance(reply, Sleep):
        return Sleep(reply.seconds, _echoed(reply.then, convo))
    if isinstance(reply, Drip):
        return Drip(reply.seconds, _echoed(reply.then, convo))
    return reply


def _unwrap(reply: Reply) -> tuple[float, float, Text | ToolCalls]:
    """The delay before the answer, the pause between streamed pieces, and the answer."""
    delay = drip = 0.0
    while isinstance(reply, Sleep | Drip):
        if isinstance(reply, Sleep):
            delay += reply.seconds
        else:
            drip = reply.seconds
        reply = reply.then
    return delay, drip, reply


def _wire_call(call: ToolCall) -> Json:
    return {
        "id": call.id or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def _usage(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    prompt = max(1, prompt_chars // 4)
    completion = max(1, completion_chars // 4)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _build_completion(body: Json, convo: _Conversation, reply: Text | ToolCalls) -> _Completion:
    text = reply.content if isinstance(reply, Text) else None
    calls = [_wire_call(c) for c in reply.calls] if isinstance(reply, ToolCalls) else []
    completion_chars = (
        len(text) if text is not None else sum(len(c["function"]["arguments"]) for c in calls)
    )
    return _Completion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        model=str(body.get("model") or MODEL_ID),
        created=int(time.time()),
        text=text,
        calls=calls,
        usage=_usage(convo.prompt_chars, completion_chars),
    )


def _completion_body(c: _Completion) -> Json:
    message: Json = {"role": "assistant", "content": c.text}
    if c.calls:
        message["tool_calls"] = c.calls
    choice = {"index": 0, "message": message, "finish_reason": c.finish_reason, "logprobs": None}
    return {
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": [choice],
        "usage": c.usage,
    }


def _chunk(c: _Completion, choices: list[Json], usage: dict[str, int] | None = None) -> Json:
    chunk: Json = {
        "id": c.id,
        "object": "chat.completion.chunk",
        "created": c.created,
        "model": c.model,
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _choice_delta(delta: Json, finish_reason: str | None = None) -> Json:
    return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}


def _text_deltas(text: str) -> Iterator[Json]:
    for piece in re.split(r"(?<=\s)(?=\S)", text):
        yield {"content": piece}


def _tool_call_deltas(calls: list[Json]) -> Iterator[Json]:
    for index, call in enumerate(calls):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        head = {"name": call["function"]["name"], "arguments": arguments[:half]}
        yield {
            "tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": head}]
        }
        yield {"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]}


def _stream_chunks(c: _Completion, include_usage: bool) -> Iterator[Json]:
    deltas = _tool_call_deltas(c.calls) if c.calls else _text_deltas(c.text or "")
    for number, delta in enumerate(deltas):
        yield _chunk(c, [_choice_delta({"role": "assistant", **delta} if number == 0 else delta)])
    yield _chunk(c, [_choice_delta({}, c.finish_reason)])
    if include_usage:
        yield _chunk(c, [], c.usage)


def _sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


def _error(status: int, message: str, kind: str = "server_error") -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": None}}, status_code=status
    )


def _chat_of_anthropic(body: Json) -> list[Json]:
    """An Anthropic request as the chat messages `_read_conversation` reads."""
    chat: list[Json] = []
    system = body.get("system")
    if system:
        chat.append({"role": "system", "content": system})
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if blocks and all(b.get("type") == "tool_result" for b in blocks):
            chat.append({"role": "tool", "content": ""})
        else:
            chat.append({"role": message.get("role"), "content": content})
    return chat


def _anthropic_message(body: Json, c: _Completion) -> Json:
    content: list[Json] = [{"type": "text", "text": c.text}] if c.text is not None else []
    for call in c.calls:
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_" + call["id"].removeprefix("call_"),
                "name": call["function"]["name"],
                "input": json.loads(call["function"]["arguments"]),
            }
        )
    return {
        "id": "msg_" + c.id.removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": str(body.get("model") or MODEL_ID),
        "content": content,
        "stop_reason": "tool_use" if c.calls else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": c.usage["prompt_tokens"],
            "output_tokens": c.usage["completion_tokens"],
        },
    }


def _anthropic_events(message: Json) -> Iterator[Json]:
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": usage["input_tokens"], "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            for delta in _text_deltas(block["text"]):
                text_delta = {"type": "text_delta", "text": delta["content"]}
                yield {"type": "content_block_delta", "index": index, "delta": text_delta}
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {**block, "input": {}},
            }
            arguments = json.dumps(block["input"])
            json_delta = {"type": "input_json_delta", "partial_json": arguments}
            yield {"type": "content_block_delta", "index": index, "delta": json_delta}
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield {"type": "message_stop"}


def _anthropic_error(status: int, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "api_error"
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}}, status_code=status
    )


def _include_usage(body: Json) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


class FakeLLM:
    """A scriptable OpenAI Chat Completions server; see the module docstring."""

    def __init__(self, *, latency: float = 0.0, port: int = 0) -> None:
        self.latency = latency
        self._initial_latency = latency
        self.requests: list[Json] = []
        self.anthropic_requests: list[Json] = []
        self.base_url = ""
        self._port = port
        self._lock = threading.Lock()
        self._scripts: list[_Script] = []
        self._failures: list[_Failure] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()

    def script(self, match: str, *replies: Reply) -> None:
        if not replies:
            raise ValueError("a script needs at least one reply")
        with self._lock:
            self._scripts.append(_Script(match, replies))

    def fail(
        self, match: str, status: int, message: str = "boom", times: int | None = None
    ) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for always")
        with self._lock:
            self._failures.append(_Failure(match, status, message, times))

    def reset(self) -> None:
        self.latency = self._initial_latency
        with self._lock:
            self._scripts.clear()
            self._failures.clear()
            self.requests.clear()
            self.anthropic_requests.clear()

    def start(self) -> FakeLLM:
        if self._server is not None:
            raise RuntimeError("FakeLLM is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self._port))
        port = sock.getsockname()[1]
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), name="fakellm", daemon=True
        )
        self._thread.start()
        self._wait_started()
        self.base_url = f"http://{HOST}:{port}/v1"
        return self

    def stop(self) -> None:
        server, thread, loop = self._server, self._thread, self._loop
        if server is None or thread is None:
            return
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stopping.set)
        server.should_exit = True
        thread.join(START_TIMEOUT)
        self._server = self._thread = self._loop = None
        self._stopping = asyncio.Event()

    def __enter__(self) -> FakeLLM:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _config(self) -> uvicorn.Config:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        return uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_keep_alive=60,
            timeout_graceful_shutdown=2,
        )

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            self._loop = runner.get_loop()
            runner.run(server.serve(sockets=[sock]))

    def _wait_started(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("FakeLLM failed to start")
            time.sleep(0.005)

    async def _models(self, request: Request) -> Response:
        model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fakellm"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _chat_completions(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        with self._lock:
            self.requests.append(body)
        convo = _read_conversation(body.get("messages") or [])
        failure = self._take_failure(convo)
        if failure is not None:
            return _error(failure.status, failure.message)
        delay, drip, reply = _unwrap(self._choose_reply(convo))
        completion = _build_completion(body, convo, reply)
        delay += self.latency
        if body.get("stream"):
            stream = self._stream(completion, delay, _include_usage(body), drip)
            return StreamingResponse(stream, media_type="text/event-stream")
        delay += drip * sum(1 for _ in _stream_chunks(completion, include_usage=False))
        if not await self._pause(delay):
            return _error(503, "fake LLM is shutting down")
        return JSONResponse(_completion_body(completion))

    async def _messages(self, request: Request) -> Response:
        """Anthropic's Messages API, answering like `_chat_completions`."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _anthropic_error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _anthropic_error(400, "request body must be a JSON object")
        with self._lock:
            self.anthropic_requests.append(body)
        convo = _read_conversation(_chat_of_anthropic(body))
        failure = self._take_failure(convo)
        if failure is not None:
            return _anthropic_error(failure.status, failure.message)
        delay, _drip, reply = _unwrap(self._choose_reply(convo))
        message = _anthropic_message(body, _build_completion(body, convo, reply))
        delay += self.latency
        if body.get("stream"):
            events = self._anthropic_stream(message, delay)
            return StreamingResponse(events, media_type="text/event-stream")
        if not await self._pause(delay):
            return _anthropic_error(503, "fake LLM is shutting down")
        return JSONResponse(message)

    async def _anthropic_stream(self, message: Json, delay: float) -> AsyncIterator[bytes]:
        if not await self._pause(delay):
            return
        for event in _anthropic_events(message):
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()

    def _take_failure(self, convo: _Conversation) -> _Failure | None:
        with self._lock:
            failure = _match_conversation(self._failures, convo)
            if failure is None or failure.remaining is None:
                return failure
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.remove(failure)
            return failure

    def _choose_reply(self, convo: _Conversation) -> Reply:
        with self._lock:
            script = _match_conversation(self._scripts, convo)
        reply = _default_reply(convo) if script is None else script.reply_at(convo.step)
        return _echoed(reply, convo)

    async def _stream(
        self, completion: _Completion, delay: float, include_usage: bool, drip: float = 0.0
    ) -> AsyncIterator[bytes]:
        if not await self._pause(delay):
            return
        for number, chunk in enumerate(_stream_chunks(completion, include_usage)):
            if number and not await self._pause(drip):
                return
            yield _sse(json.dumps(chunk))
        yield _sse("[DONE]")

    async def _pause(self, seconds: float) -> bool:
        if seconds > 0:
            try:
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()
            except TimeoutError:
                return True
        return not self._stopping.is_set()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI Chat Completions API.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--tool-first",
        action="append",
        default=[],
        metavar="TOOL:MATCH",
        help="conversations matching MATCH first call TOOL (no arguments), then get the echo",
    )
    args = parser.parse_args(argv)
    llm = FakeLLM(latency=args.latency, port=args.port)
    for spec in args.tool_first:
        tool, _, match = spec.partition(":")
        llm.script(match, tool_calls(ToolCall(tool, {})), Echo())
    llm.start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"listening {llm.base_url.removesuffix('/v1')}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        llm.stop()


if __name__ == "__main__":
    main()
