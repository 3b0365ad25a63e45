"""A sandbox for tests, and what a test needs to check that nothing of a run is left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from kennel.agent.tools.sandbox import Sandbox
from kennel.config import Settings


def sandbox_for(tmp_path: Path, **overrides: Any) -> Sandbox:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "sandbox_timeout_seconds": 30}
    values.update(overrides)
    sandbox = Sandbox(Settings(**values))
    # The suite needs bubblewrap (`make install` installs it): fail, don't skip, without it.
    assert sandbox.available, sandbox.unavailable_reason
    return sandbox


def descendants() -> list[psutil.Process]:
    """This test process's descendants that still run (a sandbox's processes are among them)."""
    alive = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive
