"""Measure Kennel's task throughput and cost against the fake model server.

Run ``.venv/bin/python bench/tasks.py [--quick] [--json out.json]`` (``make bench``); add
``--profile DIR [--profiler py-spy|cprofile]`` to profile the server during the concurrent and
burst phases, ``--keep`` to keep the temporary data dir and logs, ``--database-url URL`` to run
the server on that database instead of SQLite (an empty one: say a new PostgreSQL database).

Method
------
The script starts `tests/fakellm.py` and a fresh ``kennel serve`` (SQLite in a temporary data
dir, rate limiting off) as subprocesses, creates an API key with ``kennel keys create`` and one
worker, then drives ``POST /api/tasks`` (blocking JSON) with its own lean HTTP/1.1 client:
raw asyncio streams on uvloop, one keep-alive connection per client, Content-Length and chunked
decoding only. Phases:

1. sequential: one task after another on the existing worker (``workerId``), latency 0 →
   p50/p95/p99; then the same without ``workerId`` (each task also creates a worker);
2. concurrent: 32 closed-loop clients over many tasks, latency 0 → tasks/s; then both again with
   tool tasks: the fake answers inputs holding ``tooltask`` with a `list_files` call first, so
   each such task is two model calls around one tool call (reported next to the plain ones);
3. burst: the fake is restarted with a 2 s latency, the server restarted against it (same data
   dir), and 500 tasks are sent at once on pre-opened connections → wall time from the first
   send to the last answer. The same burst sent straight to the fake model is the baseline that
   shows the load generator itself is not the bottleneck.

Every answer is checked: HTTP 200, JSON ``status == "completed"``, and an ``output_text`` that
contains the task's unique input (the fake echoes it), so crossed answers count as failures too.
Requests time out (`TIMEOUT` seconds; `BURST_TIMEOUT` in the burst) and count as failures;
throughput counts successful tasks up to the last successful answer, so a hung task does not
stretch it.

Server CPU is psutil's user+system time of the ``kennel serve`` process and its children, read
before and after each batch, divided by the batch's tasks. Peak memory is the larger of an RSS
sample taken every 50 ms and the kernel's high-water mark (VmHWM) read before each server stops.

Caveats
-------
* Everything shares this machine's cores: the fake model (one model call per plain task: its
  short input is its own title, so no title is asked for) and the load generator compete with
  the server. Their CPU per task is
  reported, and so is the CPU used by *other* processes during each phase (other people's test
  runs skew the numbers; rerun when "other CPU" is not ~0).
* Burst connections are opened before the clock starts: the number measures task handling, not
  500 TCP handshakes.
* A warm-up batch precedes the measured ones (imports, model client, SQLite caches).
* ``--profiler py-spy`` (default) samples every thread of the server with ``py-spy record
  --nonblocking`` (needs py-spy in the venv and ptrace rights); ``--profiler cprofile`` starts the
  server through `bench/serve_profiled.py`, which profiles the event-loop thread and counts SQL
  transactions (by calling function) and statements. cProfile roughly doubles the server's CPU
  cost, so profiled runs measure the profile, not the targets.

Exit status: 0 when the measurements ran (targets are reported, not asserted), 1 when more than
1% of the tasks failed, 2 when the harness broke (a process did not start), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import platform
import pstats
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psutil

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] brings it
    uvloop = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
MODEL = "openai-chat:fake-model"
TOOL = "list_files"
TOOL_TASK = "tooltask"
"""Tasks whose input holds this word make two model calls around one `list_files` call."""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
"""Between phases nothing is in flight: the server shuts down gracefully well within this."""
ABORT_TIMEOUT = 3.0
"""On Ctrl-C or an error, requests may be in flight: kill after this."""
TIMEOUT = 30.0
BURST_TIMEOUT = 120.0
SAMPLE_SECONDS = 0.05
MIB = 1024 * 1024
MAX_FAILURE_RATE = 0.01
BUSY_CORES = 0.25

Checker = Callable[[int, bytes], str | None]


class HarnessError(RuntimeError):
    """The benchmark itself could not run (as opposed to the server doing badly)."""


@dataclass(frozen=True)
class Sizes:
    warmup: int
    sequential: int
    sequential_new_worker: int
    concurrent: int
    clients: int
    burst: int
    burst_latency: float

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(10, 50, 20, 300, 32, 500, 2.0)
        return cls(30, 200, 50, 2000, 32, 500, 2.0)


# --------------------------------------------------------------------------- HTTP client


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    check: Checker


class Connection:
    """One keep-alive HTTP/1.1 connection with just enough protocol for this benchmark."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self._port = port
        fixed = {"Host": f"{HOST}:{port}", "Content-Type": "application/json", **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self._port)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        await self.connect()
        assert self._reader is not None and self._writer is not None
        start = f"POST {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode()
        self._writer.write(start + self._head + b"\r\n" + body)
        status, headers = await _read_head(self._reader)
        if headers.get("transfer-encoding") == "chunked":
            payload = await _read_chunked(self._reader)
        elif "content-length" in headers:
            payload = await self._reader.readexactly(int(headers["content-length"]))
        else:
            payload = await self._reader.read()
            headers["connection"] = "close"
        if headers.get("connection") == "close":
            self.close()
        return status, payload


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in filter(None, lines[1:]):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


@dataclass(frozen=True)
class Outcome:
    sent: float
    answered: float
    failure: str | None

    @property
    def ms(self) -> float:
        return (self.answered - self.sent) * 1000


async def _send(conn: Connection, request: Request, timeout: float = TIMEOUT) -> Outcome:
    sent = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            status, body = await conn.post(request.path, request.body)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
        conn.close()
        return Outcome(sent, time.perf_counter(), type(error).__name__)
    return Outcome(sent, time.perf_counter(), request.check(status, body))


async def closed_loop(
    port: int, headers: dict[str, str], requests: Sequence[Request], clients: int
) -> list[Outcome]:
    """`clients` connections, each sending its next request as soon as the last one answered."""
    pending = iter(requests)
    outcomes: list[Outcome] = []

    async def client() -> None:
        conn = Connection(port, headers)
        try:
            for request in pending:
                outcomes.append(await _send(conn, request))
        finally:
            conn.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(min(clients, len(requests))):
            group.create_task(client())
    return outcomes


async def burst(port: int, headers: dict[str, str], requests: Sequence[Request]) -> list[Outcome]:
    """Open one connection per request, then send them all at once."""
    conns = [Connection(port, headers) for _ in requests]
    try:
        await asyncio.gather(*(conn.connect() for conn in conns))
        go = asyncio.Event()

        async def one(conn: Connection, request: Request) -> Outcome:
            await go.wait()
            return await _send(conn, request, BURST_TIMEOUT)

        tasks = [asyncio.create_task(one(c, r)) for c, r in zip(conns, requests, strict=True)]
        await asyncio.sleep(0.1)  # every task is parked on `go`
        go.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for conn in conns:
            conn.close()


# --------------------------------------------------------------------------- answer checks


def task_request(text: str, worker_id: str | None) -> Request:
    fields: dict[str, Any] = {"input": text}
    if worker_id is not None:
        fields["workerId"] = worker_id
    tool = TOOL if TOOL_TASK in text else None
    return Request("/api/tasks", json.dumps(fields).encode(), _task_checker(text, tool))


def _used_tool(answer: dict[str, Any], tool: str) -> bool:
    messages = answer.get("messages") or [{}]
    parts = messages[-1].get("parts") or []
    return any(part.get("type") == f"tool-{tool}" for part in parts)


def _task_checker(text: str, tool: str | None = None) -> Checker:
    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"http {status}"
        try:
            answer = json.loads(body)
        except ValueError:
            return "invalid json"
        if answer.get("status") != "completed":
            return f"status {answer.get('status')!r}"
        output = answer.get("output_text")
        if not isinstance(output, str) or not output:
            return "empty output_text"
        if tool is not None and not _used_tool(answer, tool):
            return f"no {tool} call"
        return None if text in output else "output_text of another task"

    return check


def completion_request(text: str) -> Request:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": text}]}
    return Request("/v1/chat/completions", json.dumps(body).encode(), _completion_checker)


def _completion_checker(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"http {status}"
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "malformed completion"
    return None if content else "empty completion"


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KENNEL_", "OPENAI_"))}
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Child:
    """A subprocess in its own session (Ctrl-C reaches only us), stopped politely then killed."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=out,
                start_new_session=True,
            )
        self.process = psutil.Process(self.popen.pid)

    def read_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for a stdout line matching `pattern`."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.popen.stdout], [], [], left)
            line = self.popen.stdout.readline().decode(errors="replace") if ready else ""
            if ready and not line:
                break
            if found := re.search(pattern, line):
                return found
        self.fail("did not print " + pattern)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            self.fail(f"exited with status {self.popen.returncode}")

    def fail(self, problem: str) -> NoReturn:
        raise HarnessError(f"{self.name} {problem}; its log ends with:\n{_tail(self.log)}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def start_fake(latency: float, log: Path) -> tuple[Child, int]:
    argv = [sys.executable, "tests/fakellm.py", "--port", "0", "--latency", str(latency)]
    argv += ["--tool-first", f"{TOOL}:{TOOL_TASK}"]
    fake = Child(f"fake model (latency {latency}s)", argv, _clean_env(), log)
    try:
        port = int(fake.read_line(r"listening http://[\d.]+:(\d+)", START_TIMEOUT)[1])
    except BaseException:
        fake.stop()
        raise
    return fake, port


def kennel_env(
    data_dir: Path, fake_port: int, port: int, database_url: str | None = None
) -> dict[str, str]:
    database = {} if database_url is None else {"KENNEL_DATABASE_URL": database_url}
    return _clean_env(
        **database,
        KENNEL_DATA_DIR=str(data_dir),
        KENNEL_MODEL=MODEL,
        KENNEL_PUBLIC_URL=f"http://{HOST}:{port}",
        KENNEL_RATE_LIMIT_PER_SECOND="0",
        OPENAI_BASE_URL=f"http://{HOST}:{fake_port}/v1",
        OPENAI_API_KEY="k",
    )


def create_key(env: dict[str, str]) -> str:
    argv = [str(BIN / "kennel"), "keys", "create", "--org", "bench", "--user", "b@x"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise HarnessError(f"kennel keys create failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1].strip()


def _sync_call(port: int, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conn.request(method, path, payload, headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.strip() else None
    finally:
        conn.close()


def start_kennel(env: dict[str, str], argv: list[str], port: int, key: str, log: Path) -> Child:
    server = Child("kennel serve", argv, env, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            server.check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                if _sync_call(port, "GET", "/api/workers", key)[0] == 200:
                    return server
            time.sleep(0.1)
        server.fail(f"did not answer within {START_TIMEOUT:.0f}s")
    except BaseException:
        server.stop()
        raise


# --------------------------------------------------------------------------- meters


def cpu_seconds(process: psutil.Process) -> float:
    """User+system CPU of a process, its reaped children and its live descendants."""
    try:
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
    except psutil.Error:
        return 0.0
    return float(total)


def _own_cpu_seconds(process: psutil.Process) -> float:
    """User+system CPU of the process alone (this script's children are the services)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(sum(getattr(t, n, 0.0) for n in ("user", "nice", "system", "irq", "softirq")))


def _rss(process: psutil.Process) -> int:
    try:
        total = int(process.memory_info().rss)
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += int(child.memory_info().rss)
    except psutil.Error:
        return 0
    return total


def vm_hwm(pid: int) -> int:
    """The kernel's peak-RSS high-water mark of a live process, in bytes (0 if unknown)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class MemorySampler:
    """Samples the server's RSS every `SAMPLE_SECONDS` on a thread; keeps the overall peak and
    the peak since the last `watch()` or `phase_peak()`."""

    def __init__(self) -> None:
        self.peak = 0
        self._phase_peak = 0
        self._process: psutil.Process | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def watch(self, process: psutil.Process | None) -> None:
        self._process = process
        self._phase_peak = 0

    def phase_peak(self) -> int:
        """The peak since the previous call (and one sample now), then starts a new phase."""
        process = self._process
        peak = max(self._phase_peak, _rss(process) if process is not None else 0)
        self._phase_peak = 0
        return peak

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            process = self._process
            if process is not None:
                rss = _rss(process)
                self.peak = max(self.peak, rss)
                self._phase_peak = max(self._phase_peak, rss)


@dataclass(frozen=True)
class CpuSample:
    wall: float
    server: float
    fake: float
    bench: float
    busy: float


class Meter:
    """CPU seconds of the server, the fake model, this script and the whole machine."""

    def __init__(self, server: Child, fake: Child) -> None:
        self._server = server.process
        self._fake = fake.process
        self._me = psutil.Process()

    def sample(self) -> CpuSample:
        return CpuSample(
            wall=time.perf_counter(),
            server=cpu_seconds(self._server),
            fake=cpu_seconds(self._fake),
            bench=_own_cpu_seconds(self._me),
            busy=_busy_seconds(),
        )


# --------------------------------------------------------------------------- results


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class Batch:
    name: str
    tasks: int
    failures: int
    failure_reasons: dict[str, int]
    wall_s: float
    span_s: float
    """From the first send to the last answer."""
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    per_s: float
    """Successful requests per second, from the first send to the last successful answer."""
    server_cpu_ms: float
    fake_cpu_ms: float
    bench_cpu_ms: float
    other_cpu_cores: float
    """CPU used by processes other than the server, the fake and this script, in cores."""
    peak_rss_mib: float = 0.0
    """The server's peak RSS during the batch."""

    @classmethod
    def of(cls, name: str, outcomes: list[Outcome], before: CpuSample, after: CpuSample) -> Batch:
        n = max(1, len(outcomes))
        ok = [o.ms for o in outcomes if o.failure is None]
        reasons = Counter(o.failure for o in outcomes if o.failure is not None)
        first_sent = min(o.sent for o in outcomes)
        span = max(o.answered for o in outcomes) - first_sent
        ok_span = max((o.answered for o in outcomes if o.failure is None), default=first_sent)
        ok_span -= first_sent
        wall = after.wall - before.wall
        own = sum(getattr(after, k) - getattr(before, k) for k in ("server", "fake", "bench"))
        return cls(
            name=name,
            tasks=len(outcomes),
            failures=sum(reasons.values()),
            failure_reasons=dict(reasons),
            wall_s=wall,
            span_s=span,
            p50_ms=percentile(ok, 50),
            p95_ms=percentile(ok, 95),
            p99_ms=percentile(ok, 99),
            max_ms=max(ok, default=0.0),
            per_s=len(ok) / ok_span if ok_span > 0 else 0.0,
            server_cpu_ms=(after.server - before.server) * 1000 / n,
            fake_cpu_ms=(after.fake - before.fake) * 1000 / n,
            bench_cpu_ms=(after.bench - before.bench) * 1000 / n,
            other_cpu_cores=max(0.0, (after.busy - before.busy - own) / wall) if wall else 0.0,
        )


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    limit: float
    at_least: bool = False
    """True when the value must reach the limit, False when it must stay under it."""

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    @property
    def label(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g}"


@dataclass
class Report:
    batches: dict[str, Batch] = field(default_factory=dict)
    peak_rss_sampled: int = 0
    peak_rss_hwm: int = 0
    rss_after_start: int = 0
    profiles: dict[str, list[str]] = field(default_factory=dict)

    @property
    def peak_rss_mib(self) -> float:
        return max(self.peak_rss_sampled, self.peak_rss_hwm) / MIB

    @property
    def failure_rate(self) -> float:
        measured = [b for b in self.batches.values() if not b.name.startswith("fake")]
        tasks = sum(b.tasks for b in measured)
        return sum(b.failures for b in measured) / tasks if tasks else 1.0

    def targets(self) -> list[Target]:
        b = self.batches
        return [
            Target("server CPU/task, sequential (ms)", b["sequential"].server_cpu_ms, 5),
            Target("server CPU/task, 32 clients (ms)", b["concurrent"].server_cpu_ms, 5),
            Target("throughput, 32 clients (tasks/s)", b["concurrent"].per_s, 200, at_least=True),
            Target("500 x 2 s tasks, wall (s)", b["burst"].span_s, 3),
            Target("server peak RSS (MiB)", self.peak_rss_mib, 200),
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "batches": {name: asdict(batch) for name, batch in self.batches.items()},
            "peak_rss_mib": self.peak_rss_mib,
            "peak_rss_sampled_mib": self.peak_rss_sampled / MIB,
            "peak_rss_hwm_mib": self.peak_rss_hwm / MIB,
            "rss_after_start_mib": self.rss_after_start / MIB,
            "failure_rate": self.failure_rate,
            "targets": [
                {"name": t.name, "value": t.value, "target": t.label, "pass": t.passed}
                for t in self.targets()
            ],
            "profiles": self.profiles,
        }


# --------------------------------------------------------------------------- profiling


class Profiler:
    """`py-spy record` of one process for the length of a `with` block (raw collapsed stacks)."""

    def __init__(self, pid: int, out: Path) -> None:
        self._pid = pid
        self.out = out
        self._popen: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if spy is None:
            raise HarnessError("--profile needs py-spy: .venv/bin/pip install py-spy")
        # --gil: only samples of a thread holding the GIL, i.e. running Python; without it, idle
        # worker threads (aiosqlite, thread pools) blocked in C look busy.
        argv = [spy, "record", "--pid", str(self._pid), "--rate", "100", "--nonblocking"]
        argv += ["--gil", "--nolineno", "--format", "raw", "--output", str(self.out)]
        log = self.out.with_suffix(".log").open("wb")
        self._popen = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        time.sleep(1.0)  # py-spy attaches
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGINT)
            try:
                self._popen.wait(30)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()


class CProfiler:
    """Toggles the cProfile of a server started by `bench/serve_profiled.py` around a block."""

    def __init__(self, pid: int, out_dir: Path, label: str) -> None:
        self._pid = pid
        self._dir = out_dir
        self._label = label

    def __enter__(self) -> CProfiler:
        (self._dir / f"{self._label}.done").unlink(missing_ok=True)
        (self._dir / "label").write_text(self._label)
        os.kill(self._pid, signal.SIGUSR1)
        return self

    def __exit__(self, *_exc: object) -> None:
        os.kill(self._pid, signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while not (self._dir / f"{self._label}.done").exists():
            if time.monotonic() > deadline:
                raise HarnessError(f"the profiled server wrote no {self._label}.prof")
            time.sleep(0.1)


def _package(filename: str) -> str:
    """Which library a profiled function belongs to (`~` is a C builtin)."""
    if filename == "~":
        return "(builtins)"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/kennel/" in filename:
        return "kennel." + filename.split("/kennel/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in filename:
        rest = filename.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "stdlib " + rest.split("/", 1)[0].removesuffix(".py")
    return filename


LAYERS = {
    "database": ("sqlalchemy", "aiosqlite", "greenlet", "kennel.storage"),
    "model client": (
        "pydantic_ai",
        "pydantic_graph",
        "openai",
        "httpx2",
        "httpcore2",
        "anyio",
        "h11",
        "sniffio",
        "pydantic",
        "pydantic_core",
        "genai_prices",
        "opentelemetry",
        "kennel.agent",
    ),
    "HTTP serving": ("uvicorn", "starlette", "fastapi", "httptools", "kennel.api"),
}


def _own_time_by_package(raw: dict[Any, Any]) -> Counter[str]:
    """Own time per library, C builtins charged to the libraries that called them."""
    charged: Counter[str] = Counter()
    for (filename, _line, _name), (_cc, _calls, own, _cum, callers) in raw.items():
        package = _package(filename)
        calling = sum(entry[2] for entry in callers.values())
        if package != "(builtins)" or not calling:
            charged[package] += own
            continue
        for (caller_file, _l, _n), entry in callers.items():
            charged[_package(caller_file)] += own * entry[2] / calling
    return charged


def _layer_of(package: str) -> str:
    return next((layer for layer, ps in LAYERS.items() if package in ps), package)


def summarize_cprofile(out_dir: Path, label: str, tasks: int, top: int = 20) -> list[str]:
    """Own time by layer, library and function; SQL transactions and statements per task."""
    raw: dict[Any, Any] = pstats.Stats(str(out_dir / f"{label}.prof")).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1.0
    packages = _own_time_by_package(raw)
    layers: Counter[str] = Counter()
    for package, own in packages.items():
        layers[_layer_of(package)] += own
    lines = [
        f"cProfile of the event-loop thread: {total * 1000 / tasks:.1f} ms own time per task "
        "(inflated by cProfile; read the shares). By layer (builtins charged to callers):"
    ]
    lines += [f"  {t * 100 / total:5.1f}%  {name}" for name, t in layers.most_common(12)]
    lines.append("by library:")
    lines += [f"  {t * 100 / total:5.1f}%  {name}" for name, t in packages.most_common(12)]
    lines.append("by function (own %, calls per task):")
    ranked = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    for (filename, line, name), (_cc, calls, own, _cumulative, _callers) in ranked:
        where = "" if filename == "~" else f"  {_package(filename)}:{Path(filename).name}:{line}"
        lines.append(f"  {own * 100 / total:5.1f}% {calls / tasks:8.1f}  {name}{where}")
    sql = json.loads((out_dir / f"{label}.sql.json").read_text())
    transactions, statements = sql["transactions"], sql["statements"]
    lines.append(f"SQL transactions: {sum(transactions.values()) / tasks:.1f} per task, by caller:")
    lines += [f"  {n / tasks:6.2f}  {site}" for site, n in list(transactions.items())[:14]]
    lines.append(f"SQL statements: {sum(statements.values()) / tasks:.1f} per task; the most run:")
    lines += [f"  {n / tasks:6.2f}  {text[:90]}" for text, n in list(statements.items())[:10]]
    return lines


def _spy_package(frame: str) -> str:
    """The library of a py-spy frame such as ``execute (sqlalchemy/engine/base.py)``."""
    path = frame.rpartition(" (")[2].rstrip(")")
    head, _, rest = path.partition("/")
    if head == "kennel":
        return "kennel." + rest.split("/", 1)[0].removesuffix(".py")
    return head.removesuffix(".py") if rest or head.endswith(".py") else path


def summarize_profile(path: Path, top: int = 15) -> list[str]:
    """Own samples by layer and by function, and kennel functions by inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            total += int(count)
            own[frames[-1]] += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
    if not total:
        return [f"(no samples in {path})"]
    layers: Counter[str] = Counter()
    for frame, n in own.items():
        layers[_layer_of(_spy_package(frame))] += n
    lines = [f"py-spy, {total} samples holding the GIL; own samples by layer:"]
    lines += [f"  {n * 100 / total:5.1f}%  {name}" for name, n in layers.most_common(10)]
    lines.append("own samples by function:")
    lines += [f"  {n * 100 / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("kennel functions by inclusive samples:")
    ours = [(f, n) for f, n in inclusive.most_common() if "(kennel/" in f]
    lines += [f"  {n * 100 / total:5.1f}%  {frame}" for frame, n in ours[:top]]
    return lines


# --------------------------------------------------------------------------- the run


@dataclass
class Services:
    fake: Child
    fake_port: int
    server: Child
    meter: Meter


class Bench:
    """Owns the temporary data dir and the subprocesses; runs the phases in order."""

    def __init__(
        self,
        sizes: Sizes,
        profile_dir: Path | None,
        profiler: str,
        keep: bool,
        database_url: str | None = None,
    ) -> None:
        self.sizes = sizes
        self.database_url = database_url
        self.profile_dir = profile_dir.resolve() if profile_dir else None
        self.profiler = profiler
        self.keep = keep
        self.report = Report()
        self.tmp = Path(tempfile.mkdtemp(prefix="kennel-bench-"))
        self.port = _free_port()
        self.key = ""
        self.worker_id = ""
        self._stack = contextlib.ExitStack()
        self._loop = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
        self._sampler = MemorySampler()
        self._children: list[Child] = []

    def __enter__(self) -> Bench:
        self._stack.callback(self._remove_tmp)
        self._stack.enter_context(self._loop)
        self._stack.enter_context(self._sampler)
        self._stack.callback(self._stop_children)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stack.close()

    def run(self) -> Report:
        s = self.sizes
        services = self._start(latency=0.0)
        self.worker_id = self._create_worker()
        self._measure("warmup", services, self._tasks("warmup", s.warmup), clients=4)
        self._measure("sequential", services, self._tasks("seq", s.sequential), clients=1)
        new_workers = self._tasks("new", s.sequential_new_worker, on_worker=False)
        self._measure("sequential_new_worker", services, new_workers, clients=1)
        concurrent = self._tasks("conc", s.concurrent)
        self._measure("concurrent", services, concurrent, clients=s.clients, profile=True)
        self._measure("tools_sequential", services, self._tasks(TOOL_TASK, s.sequential), clients=1)
        tool_tasks = self._tasks(f"{TOOL_TASK} conc", s.concurrent)
        self._measure("tools_concurrent", services, tool_tasks, clients=s.clients)
        self._stop(services)

        services = self._start(latency=s.burst_latency)
        baseline = [completion_request(f"baseline {i}") for i in range(s.burst)]
        self._measure("fake_baseline_burst", services, baseline, to_fake=True)
        self._measure("warmup_burst", services, self._tasks("warmup2", 8))
        self._measure("burst", services, self._tasks("burst", s.burst), profile=True)
        self._stop(services)
        return self.report

    # -- processes

    def _start(self, latency: float) -> Services:
        fake, fake_port = start_fake(latency, self.tmp / "fake.log")
        self._children.append(fake)
        env = kennel_env(self.tmp / "data", fake_port, self.port, self.database_url)
        self.key = self.key or create_key(env)
        server = start_kennel(env, self._serve_argv(), self.port, self.key, self.tmp / "kennel.log")
        self._children.append(server)
        self._sampler.watch(server.process)
        self.report.rss_after_start = self.report.rss_after_start or _rss(server.process)
        return Services(fake, fake_port, server, Meter(server, fake))

    def _serve_argv(self) -> list[str]:
        serve = ["serve", "--host", HOST, "--port", str(self.port)]
        if self.profile_dir is not None and self.profiler == "cprofile":
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            wrapper = str(ROOT / "bench" / "serve_profiled.py")
            return [sys.executable, wrapper, str(self.profile_dir), *serve]
        return [str(BIN / "kennel"), *serve]

    def _stop(self, services: Services) -> None:
        report = self.report
        report.peak_rss_hwm = max(report.peak_rss_hwm, vm_hwm(services.server.popen.pid))
        self._sampler.watch(None)
        report.peak_rss_sampled = max(report.peak_rss_sampled, self._sampler.peak)
        for child in (services.server, services.fake):
            child.stop()
            self._children.remove(child)

    def _stop_children(self) -> None:
        while self._children:
            self._children.pop().stop(ABORT_TIMEOUT)

    def _remove_tmp(self) -> None:
        if self.keep:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _create_worker(self) -> str:
        body = {"instructions": "Answer briefly."}
        status, worker = _sync_call(self.port, "POST", "/api/workers", self.key, body)
        if status != 200 or not isinstance(worker, dict) or "id" not in worker:
            raise HarnessError(f"POST /api/workers answered {status}: {worker}")
        return str(worker["id"])

    # -- phases

    def _tasks(self, label: str, count: int, *, on_worker: bool = True) -> list[Request]:
        worker_id = self.worker_id if on_worker else None
        return [
            task_request(f"bench {label} {i} {os.urandom(4).hex()}", worker_id)
            for i in range(count)
        ]

    def _measure(
        self,
        name: str,
        services: Services,
        requests: Sequence[Request],
        *,
        clients: int | None = None,
        to_fake: bool = False,
        profile: bool = False,
    ) -> Batch:
        """Send `requests` closed-loop over `clients` connections, or all at once if None."""
        port, headers = (services.fake_port, {}) if to_fake else (self.port, self._auth)
        if clients is None:
            load = burst(port, headers, requests)
        else:
            load = closed_loop(port, headers, requests, clients)
        pid = services.server.popen.pid
        with self._profiling(name, pid, len(requests), enabled=profile):
            self._sampler.phase_peak()
            before = services.meter.sample()
            outcomes = self._loop.run(load)
            after = services.meter.sample()
        batch = Batch.of(name, outcomes, before, after)
        batch.peak_rss_mib = self._sampler.phase_peak() / MIB
        self.report.batches[name] = batch
        print(progress_line(batch), file=sys.stderr, flush=True)
        return batch

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @contextlib.contextmanager
    def _profiling(self, name: str, pid: int, tasks: int, *, enabled: bool) -> Iterator[None]:
        out_dir = self.profile_dir
        if not enabled or out_dir is None:
            yield
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.profiler == "cprofile":
            with CProfiler(pid, out_dir, name):
                yield
            self.report.profiles[name] = summarize_cprofile(out_dir, name, tasks)
        else:
            with Profiler(pid, out_dir / f"{name}.txt"):
                yield
            self.report.profiles[name] = summarize_profile(out_dir / f"{name}.txt")


# --------------------------------------------------------------------------- output


def progress_line(batch: Batch) -> str:
    return (
        f"  {batch.name}: {batch.tasks} requests, {batch.failures} failed, "
        f"{batch.span_s:.2f}s, p50 {batch.p50_ms:.1f} ms"
    )


def render(report: Report, quick: bool, database: str = "SQLite") -> str:
    mode = "quick" if quick else "full"
    lines = [
        f"Kennel task benchmark ({mode}; {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {database}, fake model)",
        "",
        f"{'phase':<22}{'tasks':>6}{'fail':>5}{'p50ms':>8}{'p95ms':>8}{'p99ms':>8}"
        f"{'maxms':>8}{'/s':>8}{'span s':>8}{'srvCPU':>8}{'fakeCPU':>8}{'cliCPU':>8}{'other':>7}"
        f"{'RSS':>7}",
    ]
    for b in report.batches.values():
        lines.append(
            f"{b.name:<22}{b.tasks:>6}{b.failures:>5}{b.p50_ms:>8.1f}{b.p95_ms:>8.1f}"
            f"{b.p99_ms:>8.1f}{b.max_ms:>8.1f}{b.per_s:>8.1f}{b.span_s:>8.2f}"
            f"{b.server_cpu_ms:>8.2f}{b.fake_cpu_ms:>8.2f}{b.bench_cpu_ms:>8.2f}"
            f"{b.other_cpu_cores:>7.2f}{b.peak_rss_mib:>7.0f}"
        )
    measured = [b for b in report.batches.values() if not b.name.startswith("warmup")]
    busy = max((b.other_cpu_cores for b in measured), default=0.0)
    if busy > BUSY_CORES:
        lines.append(
            f"  WARNING: other processes used up to {busy:.2f} cores during a phase; "
            "the numbers are skewed, rerun on a quiet machine"
        )
    lines += [
        "  (CPU columns: ms of CPU per request for the server, the fake model and this client;",
        "   other: cores used by unrelated processes during the phase — should be ~0;",
        "   RSS: the server's peak RSS during the phase, MiB)",
        f"  server peak RSS: {report.peak_rss_sampled / MIB:.1f} MiB sampled every "
        f"{SAMPLE_SECONDS * 1000:.0f} ms, {report.peak_rss_hwm / MIB:.1f} MiB VmHWM; "
        f"{report.rss_after_start / MIB:.1f} MiB right after start",
        "",
        f"{'target (this 2-core machine)':<36}{'value':>10}{'target':>10}  result",
    ]
    for target in report.targets():
        verdict = "PASS" if target.passed else "FAIL"
        lines.append(f"{target.name:<36}{target.value:>10.2f}{target.label:>10}  {verdict}")
    lines.append(
        f"{'failed tasks (all phases)':<36}{report.failure_rate * 100:>9.2f}%{'<= 1%':>10}"
    )
    for b in report.batches.values():
        if b.failure_reasons:
            lines.append(f"  {b.name} failures: {b.failure_reasons}")
    for name, summary in report.profiles.items():
        lines += ["", f"profile of the server during {name!r}:", *summary]
    return "\n".join(lines)


def _dialect_of(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgresql") else url.split(":", 1)[0]


def _interrupt(_signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks per phase")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="profile the server into DIR (see --profiler)"
    )
    parser.add_argument(
        "--profiler",
        choices=("py-spy", "cprofile"),
        default="py-spy",
        help="py-spy: sampled stacks of every thread; cprofile: main thread + SQL counts",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="serve from this (empty) database instead of SQLite, e.g. a new PostgreSQL one",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes.pick(args.quick)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in background
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Bench(sizes, args.profile, args.profiler, args.keep, args.database_url) as bench:
            report = bench.run()
    except HarnessError as error:
        print(f"harness error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    database = "SQLite" if args.database_url is None else _dialect_of(args.database_url)
    print(render(report, args.quick, database))
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    if report.failure_rate > MAX_FAILURE_RATE:
        print(f"more than {MAX_FAILURE_RATE:.0%} of the tasks failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
