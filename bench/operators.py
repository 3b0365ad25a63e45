"""Measure what the operators' features cost: the per-request key check and the usage report.

Run ``.venv/bin/python bench/operators.py [--turns N] [--pg DSN]``.

Method
------
* Key check: ``AuthService.authenticate`` with one valid key, 2,000 times after 200 warm-up
  calls, on SQLite (a file in a temporary folder) and, with ``--pg``, on a fresh PostgreSQL
  database. Every call reads the key's row (keys are not cached, so that a revocation counts at
  the next request); the last-use write happens at most once a minute, so not in the loop.
  Reported: wall-clock microseconds per call, and the same for a bare ``SELECT 1`` transaction
  (the floor of any read on that database).
* Usage report: N finished turns (default 100,000) spread over 100 workers of 10 organizations
  and 90 days, inserted in bulk; then ``UsageService.daily`` for the last 30 days, per worker
  and per organization, for every organization and for one, each the median of 5 runs.

Caveats: the machine is shared; rerun when the numbers look off. Timings are wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import sqlalchemy as sa

from kennel import ids
from kennel.clock import SystemClock
from kennel.services.auth import AuthService
from kennel.services.usage import UsageService
from kennel.storage import Database, Store
from kennel.storage.tables import organizations, tasks, turns, users, workers

NOW = datetime.now(UTC)


async def per_call_us(call: Callable[[], Awaitable[object]], times: int = 2000) -> float:
    for _ in range(times // 10):
        await call()
    started = time.perf_counter()
    for _ in range(times):
        await call()
    return (time.perf_counter() - started) / times * 1e6


async def median_ms(call: Callable[[], Awaitable[object]], runs: int = 5) -> float:
    spent = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent)


def fill(conn: sa.Connection, turn_count: int) -> str:
    """Organizations, workers, tasks and finished turns in bulk; returns one organization id."""
    orgs = [{"id": ids.organization_id(), "name": f"org{n}", "created_at": NOW} for n in range(10)]
    conn.execute(organizations.insert(), orgs)
    people = [
        {"id": ids.user_id(), "organization_id": org["id"], "email": "a@x", "created_at": NOW}
        for org in orgs
    ]
    conn.execute(users.insert(), people)
    crew = [
        {
            "id": ids.worker_id(),
            "organization_id": people[n % 10]["organization_id"],
            "user_id": people[n % 10]["id"],
            "title": f"worker {n}",
            "instructions": "",
            "summary": "",
            "visibility": "public",
            "created_at": NOW,
            "updated_at": NOW,
        }
        for n in range(100)
    ]
    conn.execute(workers.insert(), crew)
    step = timedelta(days=90) / turn_count
    for start in range(0, turn_count, 10_000):
        batch = range(start, min(start + 10_000, turn_count))
        task_rows = [_task(n, crew[n % 100]) for n in batch]
        conn.execute(tasks.insert(), task_rows)
        conn.execute(turns.insert(), [_turn(n, NOW - step * n) for n in batch])
    return str(orgs[0]["id"])


def _task(n: int, worker: dict[str, object]) -> dict[str, object]:
    return {
        "key": n + 1,
        "id": f"tsk_{n}",
        "organization_id": worker["organization_id"],
        "worker_id": worker["id"],
        "title": "t",
        "status": "completed",
        "triggered_by": "api",
        "metadata": {},
        "created_at": NOW,
    }


def _turn(n: int, finished: datetime) -> dict[str, object]:
    return {
        "id": f"trn_{n}",
        "task_key": n + 1,
        "seq": 0,
        "input": "hi",
        "budget": "standard",
        "status": "completed",
        "input_tokens": 1000,
        "output_tokens": 100,
        "credits": 2,
        "created_at": finished,
        "completed_at": finished,
    }


async def measure(label: str, url: str, turn_count: int) -> None:
    store = Store(Database(url))
    try:
        await store.migrate()
        clock = SystemClock()
        auth = AuthService(store, clock)
        header = f"Bearer {(await auth.create_key('bench', 'a@bench.test')).key}"
        floor = await per_call_us(
            lambda: store.database.read(lambda c: c.execute(sa.text("SELECT 1")).scalar())
        )
        check = await per_call_us(lambda: auth.authenticate(header))
        print(f"{label}: key check {check:.0f} µs/request (bare read transaction {floor:.0f} µs)")

        started = time.perf_counter()
        org_id = await store.database.write(lambda conn: fill(conn, turn_count))
        print(f"{label}: {turn_count:,} turns inserted in {time.perf_counter() - started:.1f} s")
        usage = UsageService(store, clock)
        since = date.today() - timedelta(days=29)
        for per_worker in (True, False):
            for org in (None, org_id):
                rows = await usage.daily(organization_id=org, since=since, per_worker=per_worker)
                spent = await median_ms(
                    lambda o=org, p=per_worker: usage.daily(
                        organization_id=o, since=since, per_worker=p
                    )
                )
                what = f"per {'worker' if per_worker else 'organization'}, "
                what += "every organization" if org is None else "one organization"
                print(f"{label}: usage 30 days {what}: {len(rows)} rows in {spent:.1f} ms")
    finally:
        await store.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--pg", help="PostgreSQL DSN of a server where a database may be made")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        await measure("sqlite", f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}", args.turns)
    if args.pg:
        name = f"kennel_bench_{ids.new_id('b').lower().replace('-', '_')}"
        admin = await asyncpg.connect(args.pg)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            base = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            await measure("postgres", f"{base}/{name}", args.turns)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
