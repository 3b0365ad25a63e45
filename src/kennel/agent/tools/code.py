"""`run_python`: code in the sandbox, with the workspace as its working directory.

The files it creates or changes there count as the turn's files, like those of `write_file`:
the workspace is compared before and after the run.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai import RunContext, ToolReturn
from pydantic_ai.exceptions import ToolFailed

from kennel.agent.stream import Chunk
from kennel.agent.toolbox import Toolbox


async def run_python(ctx: RunContext[Toolbox], code: str) -> ToolReturn:
    """Run a Python 3 program in a sandbox and return what it printed.

    The working directory is the workspace: files the program writes there are kept and
    shared with the user. There is no network access; time, memory and output are limited.

    Args:
        code: The complete program; print what you want to see.
    """
    box = ctx.deps
    if box.sandbox is None or box.folder is None:
        raise ToolFailed("running Python is not available")
    before = await box.folder.fingerprints()
    result = await box.sandbox.run_python(code, box.folder.root)
    after = await box.folder.fingerprints()
    chunks: list[Chunk] = []
    changed = sorted(path for path, mark in after.items() if before.get(path) != mark)
    for path in changed:
        file = await box.folder.stat(path)
        if file is not None:
            chunks += box.add_file(file)
    removed = sorted(set(before) - set(after))
    for path in removed:
        box.remove_file(path)
    output: dict[str, Any] = {
        "exitCode": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
    }
    if result.timed_out:
        output["timedOut"] = True
    if result.stdout_truncated or result.stderr_truncated:
        output["outputCut"] = True
    if changed or removed:
        output["filesChanged"] = changed
        output["filesDeleted"] = removed
    return ToolReturn(output, metadata=chunks)
