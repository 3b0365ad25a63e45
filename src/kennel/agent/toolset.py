"""The tools a turn offers, and the budget that withdraws them (spec §16.8).

Before every model request the toolset decides what the model may use: the tools this turn
offers (a worker without a sandbox gets no `run_python`), or none at all once the next request
has to be the last one the budget allows. That last request, the wrap-up, is told to answer with
what it has; it counts against the caps like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.exceptions import ToolFailed, UsageLimitExceeded
from pydantic_ai.toolsets import FunctionToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from kennel.agent.toolbox import Toolbox
from kennel.agent.tools import code, files, research
from kennel.errors import KennelError

logger = logging.getLogger(__name__)

WRAP_UP = (
    "The budget of this task is spent: no tools are available any more. Do not call tools. "
    "Write your best, complete answer now from what you have already found, and say briefly "
    "what you could not finish."
)
TOOL_BUDGET_SPENT = "The tool-call budget of this task is spent; this call did not run."

ToolFunction = Callable[..., Any]


@dataclass
class BudgetedToolset(WrapperToolset[Toolbox]):
    """Offers the turn's tools until the budget calls for the wrap-up; failures go to the model."""

    async def get_tools(self, ctx: RunContext[Toolbox]) -> dict[str, ToolsetTool[Toolbox]]:
        box = ctx.deps
        if box.tokens_spent(ctx.usage):
            raise UsageLimitExceeded(f"the token budget of {box.caps.tokens} is spent")
        if not box.wrapping_up and box.must_wrap_up(ctx.usage, ctx.messages):
            box.wrapping_up = True
        if box.wrapping_up:
            return {}
        tools = await self.wrapped.get_tools(ctx)
        return {name: tool for name, tool in tools.items() if name in box.offered}

    async def get_instructions(self, ctx: RunContext[Toolbox]) -> str | None:
        return WRAP_UP if ctx.deps.wrapping_up else None

    async def call_tool(
        self,
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[Toolbox],
        tool: ToolsetTool[Toolbox],
    ) -> Any:
        if not ctx.deps.take_tool_call():
            raise ToolFailed(TOOL_BUDGET_SPENT)
        try:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        except KennelError as error:
            raise ToolFailed(error.message) from error
        except OSError as error:
            logger.info("tool %s failed: %s", name, error)
            raise ToolFailed(f"{name} failed: {error.strerror or error}") from error


def build_toolset() -> BudgetedToolset:
    """Every tool Kennel has; each turn's `Toolbox.offered` picks the ones it may use."""
    functions: list[ToolFunction] = [
        research.web_search,
        research.web_fetch,
        files.list_files,
        files.read_file,
        files.write_file,
        files.edit_file,
        files.delete_file,
        code.run_python,
    ]
    return BudgetedToolset(FunctionToolset[Toolbox](functions))
