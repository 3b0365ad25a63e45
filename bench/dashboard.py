"""How the dashboard's pages hold up on a worker with many tasks: time and SQL per page.

Run ``.venv/bin/python bench/dashboard.py [--tasks N] [--rounds R]``.

Method
------
An in-process Kennel on SQLite in a temporary folder (no runner, no model). One worker gets N
finished tasks (one turn each, statuses and triggers mixed), written straight into the tables,
and 50 more workers exist beside it. A signed-in client (httpx on the ASGI app, so no network)
then asks for each page R times; the numbers are the median and the slowest request's wall
time, and the SQL statements one request runs (counted on the engine). Pages that stay one
query per section whatever N is show a statement count that does not grow with N.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from kennel.app import build, create_app, running
from kennel.config import Settings
from kennel.models import Principal
from kennel.services.workers import WorkerDraft
from kennel.storage.tables import tasks, turns

ORIGIN = "http://kennel.test"
STATUSES = ("completed", "completed", "completed", "error", "aborted")
TRIGGERS = ("api", "ui", "schedule", "email")


class Counter:
    def __init__(self) -> None:
        self.statements = 0
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._count)

    def _count(self, *_args: object) -> None:
        self.statements += 1


def seed(conn: sa.Connection, organization_id: str, worker_id: str, count: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for n in range(count):
        created = start + timedelta(minutes=n)
        rows.append(
            {
                "id": f"tsk_bench{n:08d}",
                "organization_id": organization_id,
                "worker_id": worker_id,
                "title": f"Task number {n}",
                "status": STATUSES[n % len(STATUSES)],
                "triggered_by": TRIGGERS[n % len(TRIGGERS)],
                "metadata": {},
                "turn_count": 1,
                "total_credits": n % 7,
                "total_duration_ms": 1000 + n,
                "created_at": created,
                "completed_at": created + timedelta(seconds=2),
            }
        )
    conn.execute(tasks.insert(), rows)
    keys = conn.execute(sa.select(tasks.c.key).where(tasks.c.worker_id == worker_id)).scalars()
    conn.execute(
        turns.insert(),
        [
            {
                "id": f"trn_bench{key:08d}",
                "task_key": key,
                "seq": 0,
                "input": "What is new?",
                "budget": "standard",
                "status": "completed",
                "output_text": "Nothing much.",
                "created_at": start,
            }
            for key in keys
        ],
    )


async def main(count: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="kennel-bench-"))
    settings = Settings(data_dir=folder, public_url=ORIGIN, rate_limit_per_second=0)
    kennel = build(settings)
    async with running(kennel, with_runner=False):
        created = await kennel.services.auth.create_key("acme", "ada@acme.test")
        ada = Principal(created.organization.id, created.user.id, "")
        worker = await kennel.services.workers.create(ada, WorkerDraft(title="Busy"))
        for n in range(50):
            await kennel.services.workers.create(ada, WorkerDraft(title=f"Idle {n}"))
        await kennel.store.database.write(
            lambda conn: seed(conn, ada.organization_id, worker.id, count)
        )
        counter = Counter()
        transport = httpx.ASGITransport(app=create_app(kennel, with_runner=False))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            await client.post("/signin", data={"key": created.key}, headers={"origin": ORIGIN})
            last = (count + 19) // 20
            pages = {
                "workers": "/",
                "workers (search)": "/?q=busy",
                "worker": f"/worker/{worker.id}",
                "worker, last page": f"/worker/{worker.id}?page={last}",
                "worker, errors": f"/worker/{worker.id}?status=error",
                "task": f"/worker/{worker.id}/task/tsk_bench{count // 2:08d}",
                "organization": "/organization",
            }
            print(f"{count} tasks on one worker, 51 workers, {rounds} rounds, SQLite")
            print(f"{'page':<20}{'median ms':>10}{'max ms':>10}{'SQL':>6}")
            for name, path in pages.items():
                await client.get(path)  # warm-up
                times, statements = [], 0
                for _ in range(rounds):
                    before = counter.statements
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    statements = counter.statements - before
                    assert response.status_code == 200, (path, response.status_code)
                    assert re.search(r"<h1", response.text)
                print(
                    f"{name:<20}{statistics.median(times):>10.1f}{max(times):>10.1f}{statements:>6}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.rounds))
    sys.exit(0)
