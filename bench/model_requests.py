"""CPU that Kennel's agent layer spends per model request, and per turn, on this machine.

Run ``.venv/bin/python bench/model_requests.py [--requests N] [--profile out.prof]``.

Method
------
The fake model server (`tests/fakellm.py`, latency 0) runs as a subprocess whose CPU is not
counted; everything else runs in this process, and each probe is the process CPU time
(``time.process_time``) of a sequential batch divided by its size, the median of five batches
after a warm-up one:

* ``request, N tools``: one ``pydantic_ai.direct.model_request`` on the model `ModelCatalog`
  builds for ``openai-chat:fake-model``, with the parameters the turn loop sends (instructions
  and the definitions of the N tools the `ToolCatalog` offers): the model client's share.
* ``request, history``: the same after ten earlier turns of the task (40 messages: a question,
  a `read_file` call, its result of about 1 kB and an answer each).
* ``stream, 8 tools``: the same as ``request, 8 tools`` through ``model_request_stream``, read
  to its end.
* ``stream, 32 at once`` and ``stream, 500 at once``: that many of those streams started
  together, per stream: the connection pool's share with many model calls in flight (32
  clients, a burst).
* ``turn, quiet`` and ``turn, live``: a whole `TurnLoop` as the runtime builds it, all 8 tools
  offered, answered with text in one request (chunks written, no storage).
* ``tool turn, live``: a turn whose first request calls `list_files` on an empty workspace,
  then answers: two requests around one tool call.
* ``cpu-loop``: ten million ``s += i`` steps of pure Python, to compare machines.

The numbers vary with the machine's load: compare runs made within a few minutes of each
other. ``--only WORD...`` runs the probes whose name holds one of the words; ``--profile
out.prof`` writes a cProfile of one more batch of each probe (``out-<probe>.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from floor import cpu_loop_s
from pydantic_ai import direct
from pydantic_ai.messages import (
    InstructionPart,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from tasks import HOST, TOOL_TASK, start_fake

from kennel.agent.engines import Engines
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime, TurnRequest
from kennel.agent.toolset import ToolCatalog
from kennel.config import Settings
from kennel.files.folder import WorkspaceFolder
from kennel.models import BUDGET_CAPS, Budget

MODEL = "openai-chat:fake-model"
BATCHES = 5
HISTORY_TURNS = 10
AT_ONCE = {"stream, 32 at once": 32, "stream, 500 at once": 500}
"""Probes that start that many streams together; their cost is reported per stream."""
INSTRUCTIONS = "You are a careful research assistant. Answer briefly."
ALL_TOOLS = frozenset(
    {
        "web_search",
        "web_fetch",
        "list_files",
        "read_file",
        "write_file",
        "edit_file",
        "delete_file",
        "run_python",
    }
)


class _Unused:
    """Stands in for the web and sandbox engines: their tools are offered, never called."""


async def per_call_ms(requests: int, call: Callable[[int], Awaitable[object]]) -> float:
    """The median over `BATCHES` batches, which shrugs off a batch slowed by other work."""
    for i in range(max(requests // 5, 5)):
        await call(i)
    size = max(requests // BATCHES, 1)
    costs = []
    for _ in range(BATCHES):
        before = time.process_time()
        for i in range(size):
            await call(i)
        costs.append((time.process_time() - before) / size * 1000)
    return statistics.median(costs)


async def measure(
    base_url: str, requests: int, only: list[str], profile: Path | None
) -> dict[str, float]:
    settings = Settings(model=MODEL, openai_base_url=base_url, openai_api_key="k")
    catalog = ModelCatalog(settings)
    model = await catalog.get(MODEL)
    tools = ToolCatalog()
    await tools.prepare(model)
    model_settings = ModelSettings(timeout=30.0)

    def parameters(offered: frozenset[str]) -> ModelRequestParameters:
        return ModelRequestParameters(
            function_tools=tools.definitions(offered),
            output_mode="text",
            allow_text_output=True,
            instruction_parts=[InstructionPart(content=INSTRUCTIONS)],
        )

    def messages(i: int) -> list[Any]:
        return [ModelRequest([UserPromptPart(f"task {i}")], instructions=INSTRUCTIONS)]

    history = _history(HISTORY_TURNS)

    def with_history(i: int) -> list[Any]:
        return [*history, *messages(i)]

    async def request(i: int, offered: frozenset[str], *, long: bool = False) -> object:
        return await direct.model_request(
            model,
            with_history(i) if long else messages(i),
            model_settings=model_settings,
            model_request_parameters=parameters(offered),
            instrument=False,
        )

    async def stream(i: int) -> object:
        async with direct.model_request_stream(
            model,
            messages(i),
            model_settings=model_settings,
            model_request_parameters=parameters(ALL_TOOLS),
            instrument=False,
        ) as events:
            async for _ in events:
                pass
            return events.get()

    workspace = tempfile.TemporaryDirectory(prefix="kennel-bench-ws-")
    unused: Any = _Unused()
    engines = Engines(search=unused, fetcher=unused, sandbox=unused)
    runtime = AgentRuntime(catalog, model_timeout=30.0, engines=engines)

    async def turn(i: int, *, live: bool, text: str = "task") -> object:
        turn_request = TurnRequest(
            model_name=MODEL,
            instructions=INSTRUCTIONS,
            output_schema=None,
            input=f"{text} {i}",
            history=[],
            caps=BUDGET_CAPS[Budget.STANDARD],
            message_id=f"msg_{i}",
            live=live,
            folder=WorkspaceFolder(Path(workspace.name)),
        )
        result = await runtime.run_turn(turn_request, lambda chunk: None)
        assert result.error is None, result.error
        return result

    def at_once(streams: int) -> Callable[[int], Awaitable[object]]:
        async def call(i: int) -> object:
            return await asyncio.gather(*(stream(i * streams + j) for j in range(streams)))

        return call

    probes: dict[str, Callable[[int], Awaitable[object]]] = {
        "request, 0 tools": lambda i: request(i, frozenset()),
        "request, 8 tools": lambda i: request(i, ALL_TOOLS),
        "request, history": lambda i: request(i, ALL_TOOLS, long=True),
        "stream, 8 tools": stream,
        **{name: at_once(streams) for name, streams in AT_ONCE.items()},
        "turn, quiet": lambda i: turn(i, live=False),
        "turn, live": lambda i: turn(i, live=True),
        "tool turn, live": lambda i: turn(i, live=True, text=TOOL_TASK),
    }
    results: dict[str, float] = {}
    try:
        for name, call in probes.items():
            if only and not any(word in name for word in only):
                continue
            streams = AT_ONCE.get(name, 1)
            results[name] = await per_call_ms(max(requests // streams, BATCHES), call) / streams
            if profile is not None:
                profiler = cProfile.Profile()
                profiler.enable()
                await per_call_ms(requests, call)
                profiler.disable()
                profiler.dump_stats(profile.with_name(f"{profile.stem}-{_slug(name)}.prof"))
    finally:
        workspace.cleanup()
        await catalog.aclose()
    return results


def _history(turns: int) -> list[Any]:
    """Earlier turns of a task: each a question, a `read_file` call, its result and an answer."""
    words = "the quick brown fox jumps over the lazy dog while kennel keeps its workers busy "
    history: list[Any] = []
    for turn in range(turns):
        call = ToolCallPart("read_file", {"path": f"notes/{turn}.md"}, tool_call_id=f"call_{turn}")
        history += [
            ModelRequest(
                [UserPromptPart(f"question {turn}: {words * 3}")], instructions=INSTRUCTIONS
            ),
            ModelResponse([TextPart("Let me look."), call]),
            ModelRequest([ToolReturnPart("read_file", words * 12, tool_call_id=f"call_{turn}")]),
            ModelResponse([TextPart(f"answer {turn}: {words * 6}")]),
        ]
    return history


def _slug(name: str) -> str:
    return "-".join(name.replace(",", "").split())


async def main(requests: int, only: list[str], profile: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="kennel-bench-") as tmp:
        fake, port = start_fake(0.0, Path(tmp) / "fake.log")
        try:
            results = await measure(f"http://{HOST}:{port}/v1", requests, only, profile)
        finally:
            fake.stop()
    print(f"Agent-layer CPU per call ({requests} calls each, Python {sys.version.split()[0]})")
    for name, ms in results.items():
        print(f"  {name:<20}{ms:>8.2f} ms")
    print(f"  machine speed: 10M-step Python loop {cpu_loop_s():.2f} s CPU")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--only", nargs="*", default=[], help="probes whose name holds a word")
    parser.add_argument(
        "--profile", type=Path, help="write a cProfile of each probe: PROFILE-<probe>.prof"
    )
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.only, args.profile))
