"""The tools a turn offers, and how one call of them runs (spec §16.8).

Every tool is a plain pydantic-ai function tool; their definitions (names, descriptions, JSON
schemas) and argument validators are built once per process, not once per request. A call's
arguments are validated, the call is counted against the turn's tool budget, and whatever goes
wrong inside it (a missing file, a refused URL, a full budget) becomes a failed tool result the
model reads: a tool never fails the turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from pydantic_ai import RunContext, ToolReturn
from pydantic_ai.exceptions import ModelRetry, ToolFailed
from pydantic_ai.messages import RetryInfo, ToolCallPart, ToolRetryCause, ToolReturnPart
from pydantic_ai.models import Model
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.toolsets.abstract import ToolsetTool
from pydantic_ai.usage import RunUsage

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
MAX_ERRORS_TOLD = 10


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """One tool call, done: what goes back to the model, and how the stream tells it."""

    part: ToolReturnPart
    input_valid: bool
    """False when the arguments were refused: the call never ran (a `tool-input-error`)."""
    output: Any = None
    error: str | None = None
    chunks: tuple[Any, ...] = ()
    """Chunks the tool asked to stream beside its output (sources, files)."""


class ToolCatalog:
    """Every tool Kennel has; each turn's `Toolbox.offered` picks the ones it may use."""

    def __init__(self) -> None:
        self._toolset = FunctionToolset[Toolbox](
            [
                research.web_search,
                research.web_fetch,
                files.list_files,
                files.read_file,
                files.write_file,
                files.edit_file,
                files.delete_file,
                code.run_python,
            ]
        )
        self._tools: dict[str, ToolsetTool[Toolbox]] | None = None

    async def prepare(self, model: Model) -> None:
        """Build the definitions and validators once (they do not depend on the turn).

        The definitions leave out the schemas of the tools' return values, which Kennel never
        sends: a model would otherwise copy every definition without it on every request.
        """
        if self._tools is None:
            tools = await self._toolset.get_tools(_context(None, model))
            self._tools = {
                name: replace(tool, tool_def=replace(tool.tool_def, return_schema=None))
                for name, tool in tools.items()
            }

    def definitions(self, offered: frozenset[str]) -> list[ToolDefinition]:
        """The definitions of the offered tools, in a stable order."""
        assert self._tools is not None, "prepare() first"
        return [tool.tool_def for name, tool in self._tools.items() if name in offered]

    async def call(self, box: Toolbox, model: Model, call: ToolCallPart) -> CallOutcome:
        """Validate and run one call the model made; never raises for the tool's own failures."""
        assert self._tools is not None, "prepare() first"
        tool = self._tools.get(call.tool_name)
        if tool is None or call.tool_name not in box.offered:
            names = ", ".join(sorted(box.offered)) or "none"
            feedback = f"Unknown tool name: {call.tool_name!r}. Available: {names}."
            return _refused(call, feedback, "unknown_tool")
        try:
            arguments = tool.args_validator.validate_python(call.args_as_dict())
        except ValidationError as error:
            return _refused(call, _validation_feedback(error), "validation_error")
        except ValueError:
            return _refused(call, "The arguments are not valid JSON.", "validation_error")
        if not box.take_tool_call():
            return _failed(call, TOOL_BUDGET_SPENT)
        ctx = _context(box, model, tool_name=call.tool_name, tool_call_id=call.tool_call_id)
        try:
            result = await self._toolset.call_tool(call.tool_name, arguments, ctx, tool)
        except (ToolFailed, ModelRetry) as error:
            return _failed(call, str(error))
        except KennelError as error:
            return _failed(call, error.message)
        except OSError as error:
            logger.info("tool %s failed: %s", call.tool_name, error)
            return _failed(call, f"{call.tool_name} failed: {error.strerror or error}")
        chunks: tuple[Any, ...] = ()
        if isinstance(result, ToolReturn):
            chunks = tuple(result.metadata or ())
            result = result.return_value
        part = ToolReturnPart(call.tool_name, result, call.tool_call_id)
        return CallOutcome(part, True, output=result, chunks=chunks)


def output_return(call: ToolCallPart, problem: str | None) -> ToolReturnPart:
    """What the model is told of its structured answer: accepted, or why it must try again."""
    if problem is None:
        return ToolReturnPart(call.tool_name, "Final result processed.", call.tool_call_id)
    retry: RetryInfo[ToolRetryCause] = RetryInfo("validation_error")
    return ToolReturnPart(
        call.tool_name, problem, call.tool_call_id, outcome="retried", retry=retry
    )


def skipped_return(call: ToolCallPart) -> ToolReturnPart:
    """A call the model made beside its final answer: it is not run."""
    text = "Tool not executed - a final result was already processed."
    return ToolReturnPart(call.tool_name, text, call.tool_call_id)


def _refused(call: ToolCallPart, feedback: str, cause: ToolRetryCause) -> CallOutcome:
    retry: RetryInfo[ToolRetryCause] = RetryInfo(cause)
    part = ToolReturnPart(
        call.tool_name, feedback, call.tool_call_id, outcome="retried", retry=retry
    )
    return CallOutcome(part, False, error=feedback)


def _failed(call: ToolCallPart, message: str) -> CallOutcome:
    part = ToolReturnPart(call.tool_name, message, call.tool_call_id, outcome="failed")
    return CallOutcome(part, True, error=message)


def _validation_feedback(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(step) for step in item['loc']) or '(arguments)'}: {item['msg']}"
        for item in error.errors(include_url=False)[:MAX_ERRORS_TOLD]
    ]
    return "The arguments are not valid: " + "; ".join(problems)


def _context(box: Toolbox | None, model: Model, **call: Any) -> RunContext[Any]:
    return RunContext(deps=box, model=model, usage=RunUsage(), **call)
