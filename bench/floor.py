"""What the mandated stack costs per task before any Kennel code runs: the floor under ``tasks.py``.

Run ``.venv/bin/python bench/floor.py [--requests N]`` (``make bench-floor``).

Method
------
Each probe is measured on this machine against the same fake model server `tasks.py` uses
(`tests/fakellm.py`, latency 0, a subprocess whose CPU is not counted):

* ``fastapi``: a minimal FastAPI app, served by uvicorn exactly as ``kennel serve`` is (uvloop,
  httptools, no access log), with one ``POST /api/tasks`` route that validates a pydantic body
  and returns a small JSON object, no storage, no model. Driven over one keep-alive connection
  by `tasks.py`'s lean client; the number is the server process's CPU per request.
* ``pydantic-ai``: ``Agent("openai-chat:fake-model").run(text)`` in this process (the
  agent loop with an OpenAI-compatible model over HTTP, the way a turn calls its model), CPU
  per run read with ``time.process_time`` around a sequential batch.
* ``openai-sdk``: ``AsyncOpenAI().chat.completions.create`` alone, the provider client under
  pydantic-ai.
* ``httpx``: a bare ``httpx.AsyncClient.post`` of the same request, the transport under it.
* ``cpu-loop``: ten million ``s += i`` steps of pure Python, to compare machines.

Each probe runs a warm-up batch first. ``fastapi`` + ``pydantic-ai`` is the least a task can cost
with FastAPI serving it and pydantic-ai running its turn, before Kennel authenticates, stores
the task, turn and events, or streams anything; compare it with the 5 ms per task target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import HOST, Child, Connection, _clean_env, _free_port, start_fake

APP = textwrap.dedent(
    """
    import uuid
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Body(BaseModel):
        input: str
        workerId: str | None = None

    app = FastAPI()

    @app.post("/api/tasks")
    async def run(body: Body) -> dict[str, object]:
        return {"id": uuid.uuid4().hex, "status": "completed", "output_text": body.input}

    if __name__ == "__main__":
        import sys
        print("ready", flush=True)
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                    access_log=False)
    """
)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def fastapi_ms(requests: int, scratch: Path) -> float:
    script = scratch / "app.py"
    script.write_text(APP)
    port = _free_port()
    server = Child(
        "fastapi app", [sys.executable, str(script), str(port)], _clean_env(), scratch / "app.log"
    )
    try:
        server.read_line("ready", 30.0)
        conn = Connection(port, {})
        for _ in range(50):
            try:
                await conn.connect()
                break
            except OSError:
                await asyncio.sleep(0.1)
        body = json.dumps({"input": "hello", "workerId": "w"}).encode()

        async def batch(n: int) -> None:
            for _ in range(n):
                status, _ = await conn.post("/api/tasks", body)
                assert status == 200, status

        await batch(requests // 5)
        before = cpu_seconds(server.process)
        await batch(requests)
        spent = cpu_seconds(server.process) - before
        conn.close()
        return spent / requests * 1000
    finally:
        server.stop()


async def in_process_ms(requests: int, call: Callable[[int], Awaitable[object]]) -> float:
    for i in range(requests // 5):
        await call(i)
    before = time.process_time()
    for i in range(requests):
        await call(i)
    return (time.process_time() - before) / requests * 1000


def cpu_loop_s() -> float:
    before = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - before


async def main(requests: int) -> None:
    import httpx
    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="kennel-floor-") as tmp:
        scratch = Path(tmp)
        fake, fake_port = start_fake(0.0, scratch / "fake.log")
        try:
            base = f"http://{HOST}:{fake_port}/v1"
            results["fastapi"] = await fastapi_ms(requests, scratch)

            client = AsyncOpenAI(base_url=base, api_key="k")
            agent = Agent(
                OpenAIChatModel("fake-model", provider=OpenAIProvider(openai_client=client))
            )

            async def agent_run(i: int) -> object:
                return (await agent.run(f"task {i}")).output

            async def sdk_call(i: int) -> object:
                messages = [{"role": "user", "content": f"task {i}"}]
                return await client.chat.completions.create(model="fake-model", messages=messages)  # type: ignore[arg-type]

            raw = httpx.AsyncClient(base_url=base)

            async def httpx_post(i: int) -> object:
                body = {
                    "model": "fake-model",
                    "messages": [{"role": "user", "content": f"task {i}"}],
                }
                return (await raw.post("/chat/completions", json=body)).json()

            results["pydantic-ai"] = await in_process_ms(requests, agent_run)
            results["openai-sdk"] = await in_process_ms(requests, sdk_call)
            results["httpx"] = await in_process_ms(requests, httpx_post)
            await raw.aclose()
            await client.close()
        finally:
            fake.stop()
    loop_s = cpu_loop_s()

    print(
        f"Stack floor per task ({requests} requests each, {psutil.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]})"
    )
    print(f"  {'probe':<34}{'CPU ms':>8}")
    labels = {
        "fastapi": "FastAPI + uvicorn, one JSON route",
        "pydantic-ai": "pydantic-ai Agent.run, OpenAI chat",
        "openai-sdk": "openai SDK completion alone",
        "httpx": "httpx POST alone",
    }
    for name, label in labels.items():
        print(f"  {label:<34}{results[name]:>8.2f}")
    floor = results["fastapi"] + results["pydantic-ai"]
    print(f"  {'floor: FastAPI + pydantic-ai':<34}{floor:>8.2f}   (target for a whole task: <= 5)")
    print(f"  machine speed: 10M-step Python loop {loop_s:.2f} s CPU")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    asyncio.run(main(parser.parse_args().requests))
