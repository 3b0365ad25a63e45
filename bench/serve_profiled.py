"""``kennel serve`` with an on-demand cProfile, for ``bench/tasks.py --profiler cprofile``.

Usage: ``python bench/serve_profiled.py DIR serve --host H --port P``.

SIGUSR1 starts profiling the event-loop thread and counting the SQL statements executed;
SIGUSR2 stops and writes ``DIR/<label>.prof`` (pstats) and ``DIR/<label>.sql.json`` (statement
→ count), where ``<label>`` is read from ``DIR/label``, then creates ``DIR/<label>.done``.
Transactions are counted by call site (the kennel functions that opened them).
SIGHUP writes the stack of every asyncio task to ``DIR/asyncio-tasks.txt`` (where a stuck turn
waits).

Caveats: cProfile sees only the main thread (SQLite itself runs on Kennel's database threads; the
counts cover that side), and its per-call overhead inflates call-heavy code, so read shares and
call counts, not absolute milliseconds.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import re
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa

from kennel.cli import main
from kennel.storage.database import Database


def _call_site(frame: FrameType | None) -> str:
    """`Store.method <- Service.method`: who opened a transaction (coroutine frames chain up)."""
    names: list[str] = []
    while frame is not None and len(names) < 2:
        if "/kennel/" in frame.f_code.co_filename:
            names.append(frame.f_code.co_qualname)
        frame = frame.f_back
    return " <- ".join(names) or "?"


class Recorder:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.statements: Counter[str] = Counter()
        self.transactions: Counter[str] = Counter()
        self.profile: cProfile.Profile | None = None

    def start(self, _signum: int, _frame: object) -> None:
        self.statements.clear()
        self.transactions.clear()
        self.profile = cProfile.Profile()
        self.profile.enable()

    def stop(self, _signum: int, _frame: object) -> None:
        profile, self.profile = self.profile, None
        if profile is None:
            return
        profile.disable()
        label = (self.out / "label").read_text().strip()
        profile.dump_stats(self.out / f"{label}.prof")
        counts = {
            "statements": dict(self.statements.most_common()),
            "transactions": dict(self.transactions.most_common()),
        }
        (self.out / f"{label}.sql.json").write_text(json.dumps(counts, indent=1))
        (self.out / f"{label}.done").touch()

    def dump_tasks(self, _signum: int, _frame: object) -> None:
        with (self.out / "asyncio-tasks.txt").open("w") as out:
            for task in asyncio.all_tasks(asyncio.get_running_loop()):
                print(f"--- {task.get_name()} {task.get_coro()!r}", file=out)
                task.print_stack(limit=40, file=out)

    def count(self, *args: Any) -> None:
        if self.profile is not None:
            self.statements[re.sub(r"\s+", " ", args[2])[:160]] += 1

    def counting(self, kind: str, open_: Callable[..., Any]) -> Callable[..., Any]:
        def opened(database: Database, *args: Any, **kwargs: Any) -> Any:
            if self.profile is not None:
                self.transactions[f"{kind} {_call_site(sys._getframe(1))}"] += 1
            return open_(database, *args, **kwargs)

        return opened


def run(argv: list[str]) -> None:
    recorder = Recorder(Path(argv[0]))
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", recorder.count)
    Database.read = recorder.counting("read", Database.read)  # type: ignore[method-assign,assignment]
    Database.write = recorder.counting("write", Database.write)  # type: ignore[method-assign,assignment]
    signal.signal(signal.SIGUSR1, recorder.start)
    signal.signal(signal.SIGUSR2, recorder.stop)
    signal.signal(signal.SIGHUP, recorder.dump_tasks)
    main(argv[1:], prog_name="kennel")


if __name__ == "__main__":
    run(sys.argv[1:])
