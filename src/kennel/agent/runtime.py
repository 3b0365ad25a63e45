"""Runs turns of workers, and the model's side requests (task titles, workers written from a
description), on the configured models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from pydantic_ai import Agent, direct
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RunUsage, UsageLimits

from kennel.agent import outputschema
from kennel.agent.engines import Engines
from kennel.agent.loop import TurnLoop, TurnPlan, TurnResult
from kennel.agent.models import ModelCatalog
from kennel.agent.stream import Chunk
from kennel.agent.toolbox import FILE_TOOLS, Folder, Toolbox
from kennel.agent.toolset import ToolCatalog
from kennel.errors import InvalidInputError
from kennel.models import AttachedFile, BudgetCaps, JSONObject, Usage

__all__ = ["AgentRuntime", "TurnLoop", "TurnRequest", "TurnResult", "WorkerDesign"]

logger = logging.getLogger(__name__)

TITLE_INSTRUCTIONS = (
    "Write a short title (at most eight words) for the request below. "
    "Answer with the title only, without quotes."
)
TITLE_MAX_LENGTH = 200


DESIGN_INSTRUCTIONS = (
    "You set up AI workers. The user describes what a worker should do. Write:\n"
    "- instructions: the worker's complete system prompt, in the second person, covering its "
    "goal, how to work (it can search and fetch web pages, read and write files in its "
    "workspace, and run Python) and how to present its answers;\n"
    "- summary: one line of at most 80 characters saying what the worker does;\n"
    "- output_schema: only when the description asks to extract or return data in named "
    "fields, a JSON Schema (draft 7) object describing those fields; otherwise null."
)
DESIGN_REQUESTS = 3


class WorkerDesign(BaseModel):
    """What the model writes for a worker described in plain words (`POST /api/workers`)."""

    instructions: str = Field(min_length=1, max_length=20_000)
    summary: str = Field(max_length=200)
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TurnRequest:
    model_name: str
    instructions: str
    output_schema: JSONObject | None
    input: str
    history: list[bytes]
    caps: BudgetCaps
    message_id: str
    live: bool = True
    """Stream model requests token by token (someone is watching the turn as it runs)."""
    folder: Folder | None = None
    """The worker's workspace; without one, the file tools are not offered."""
    file_url: Callable[[str], str] | None = None
    """The download URL of a workspace file, for the `file` chunks of files the turn writes."""
    attachments: tuple[AttachedFile, ...] = ()
    """Files handed in with the turn: the model's prompt names them after `input`."""


class AgentRuntime:
    """Runs turns and side requests (task titles) on the configured models."""

    def __init__(
        self, catalog: ModelCatalog, *, model_timeout: float, engines: Engines | None = None
    ) -> None:
        self._catalog = catalog
        self._engines = engines or Engines()
        self._settings = ModelSettings(timeout=model_timeout)
        self._tools = ToolCatalog()
        self._designer: Agent[None, WorkerDesign] = Agent(
            instructions=DESIGN_INSTRUCTIONS, output_type=WorkerDesign, retries={"output": 2}
        )

    async def run_turn(self, request: TurnRequest, emit: Callable[[Chunk], None]) -> TurnResult:
        """Run the agent loop for one turn, handing every chunk to `emit` as it happens."""
        return await (await self.turn(request, emit)).run()

    async def turn(self, request: TurnRequest, emit: Callable[[Chunk], None]) -> TurnLoop:
        """One turn, ready to `run()`; `so_far()` tells what it did if it is stopped. A stored
        schema that breaks the rules (saved before they were checked, with a remote `$ref`
        say) fails the turn here."""
        schema = request.output_schema
        if schema is not None and (problem := outputschema.problem_of(schema)) is not None:
            raise InvalidInputError(
                f"the worker's outputSchema {problem}", code="invalid_output_schema"
            )
        plan = TurnPlan(
            model=await self._catalog.get(request.model_name),
            model_name=request.model_name,
            settings=self._settings,
            instructions=request.instructions,
            prompt=request.input,
            history=_decode_history(request.history),
            output_schema=schema,
            live=request.live,
        )
        box = self._toolbox(request)
        return TurnLoop(plan, self._tools, box, request.message_id, emit, request.attachments)

    def _toolbox(self, request: TurnRequest) -> Toolbox:
        engines, folder = self._engines, request.folder
        offered: set[str] = set()
        if folder is not None:
            offered |= FILE_TOOLS
        if engines.search is not None:
            offered.add("web_search")
        if engines.fetcher is not None:
            offered.add("web_fetch")
        if engines.sandbox is not None and folder is not None:
            offered.add("run_python")
        return Toolbox(
            caps=request.caps,
            folder=folder,
            file_url=request.file_url or (lambda path: path),
            offered=frozenset(offered),
            search=engines.search,
            fetcher=engines.fetcher,
            sandbox=engines.sandbox,
        )

    async def design_worker(
        self, model_name: str, prompt: str
    ) -> tuple[WorkerDesign | None, Usage]:
        """Instructions, a summary and maybe an output schema written by the model from a
        worker's description; None (with what it spent) if the model did not manage."""
        usage = RunUsage()
        try:
            result = await self._designer.run(
                prompt,
                model=await self._catalog.get(model_name),
                model_settings=self._settings,
                usage_limits=UsageLimits(request_limit=DESIGN_REQUESTS),
                usage=usage,
            )
        except Exception:
            logger.warning("writing a worker's instructions failed", exc_info=True)
            return None, _usage(usage)
        return result.output, _usage(result.usage)

    async def title_for(self, model_name: str, text: str) -> tuple[str | None, Usage]:
        """A short task title written by the model; None (and no usage) if it fails."""
        try:
            response = await direct.model_request(
                await self._catalog.get(model_name),
                [ModelRequest([UserPromptPart(text[:4000])], instructions=TITLE_INSTRUCTIONS)],
                model_settings=self._settings,
                model_request_parameters=ModelRequestParameters(),
                instrument=False,
            )
        except Exception:
            logger.warning("title generation failed", exc_info=True)
            return None, Usage()
        written = "".join(part.content for part in response.parts if isinstance(part, TextPart))
        title = written.strip().removeprefix("Title:").strip().strip("\"'").strip()
        usage = Usage(
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            requests=1,
        )
        return (title[:TITLE_MAX_LENGTH] or None), usage


def _decode_history(history: list[bytes]) -> list[ModelMessage]:
    messages: list[ModelMessage] = []
    for blob in history:
        messages.extend(ModelMessagesTypeAdapter.validate_json(blob))
    return messages


def _usage(usage: RunUsage) -> Usage:
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        requests=usage.requests,
        tool_calls=usage.tool_calls,
    )
