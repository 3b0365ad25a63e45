"""Runs one turn of a worker with pydantic-ai and reports it as UI stream chunks."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from jsonschema import Draft7Validator
from pydantic import BaseModel, Field
from pydantic_ai import Agent, ModelRetry, StructuredDict
from pydantic_ai.agent import AgentRunEvents
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RunUsage, UsageLimits

from kennel.agent import outputschema
from kennel.agent.attachments import turn_prompt
from kennel.agent.engines import Engines
from kennel.agent.failures import BUDGET_EXHAUSTED
from kennel.agent.messages import UIMessageBuilder
from kennel.agent.models import ModelCatalog
from kennel.agent.quiet import OUTPUT_TOOL, QuietRun
from kennel.agent.stream import Chunk, TurnEventStream, to_chunk
from kennel.agent.toolbox import FILE_TOOLS, Folder, Toolbox
from kennel.agent.toolset import build_toolset
from kennel.errors import InvalidInputError
from kennel.models import (
    AttachedFile,
    BudgetCaps,
    JSONObject,
    Source,
    TurnError,
    Usage,
    WorkspaceFile,
)

logger = logging.getLogger(__name__)

TITLE_INSTRUCTIONS = (
    "Write a short title (at most eight words) for the request below. "
    "Answer with the title only, without quotes."
)
TITLE_MAX_LENGTH = 200
STRUCTURED_AGENTS_KEPT = 128


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


@dataclass(frozen=True, slots=True)
class TurnResult:
    output_text: str
    structured_output: JSONObject | None
    usage: Usage
    model_messages: bytes | None
    ui_message: JSONObject
    error: TurnError | None = None
    incomplete_reason: str | None = None
    sources: tuple[Source, ...] = ()
    files: tuple[WorkspaceFile, ...] = ()
    deleted_files: tuple[str, ...] = ()
    failure_detail: str | None = None
    """What the operator's log says of a failure (provider, URL, status); never for clients."""


class AgentRuntime:
    """Runs turns and side requests (task titles) on the configured models."""

    def __init__(
        self, catalog: ModelCatalog, *, model_timeout: float, engines: Engines | None = None
    ) -> None:
        self._catalog = catalog
        self._engines = engines or Engines()
        self._settings = ModelSettings(timeout=model_timeout)
        self._toolset = build_toolset()
        self._agent: Agent[Toolbox, str] = Agent(deps_type=Toolbox, toolsets=[self._toolset])
        self._structured: OrderedDict[str, Agent[Toolbox, JSONObject]] = OrderedDict()
        self._titles: Agent[None, str] = Agent(instructions=TITLE_INSTRUCTIONS)
        self._designer: Agent[None, WorkerDesign] = Agent(
            instructions=DESIGN_INSTRUCTIONS, output_type=WorkerDesign, retries={"output": 2}
        )

    async def run_turn(self, request: TurnRequest, emit: Callable[[Chunk], None]) -> TurnResult:
        """Run the agent loop for one turn, handing every chunk to `emit` as it happens."""
        return await (await self.turn(request, emit)).run()

    async def turn(self, request: TurnRequest, emit: Callable[[Chunk], None]) -> TurnRun:
        """One turn, ready to `run()`; `so_far()` tells what it did if it is stopped."""
        schema = request.output_schema
        agent: Agent[Toolbox, Any] = (
            self._agent if schema is None else self._structured_agent(schema)
        )
        toolbox = self._toolbox(request)
        options: dict[str, Any] = {
            "message_history": _decode_history(request.history),
            "model": await self._catalog.get(request.model_name),
            "instructions": request.instructions or None,
            "model_settings": self._settings,
            "usage_limits": _limits(request.caps),
            "deps": toolbox,
        }
        return TurnRun(request, agent, options, toolbox, emit)

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

    def _structured_agent(self, schema: JSONObject) -> Agent[Toolbox, JSONObject]:
        """An agent whose answers must match `schema`; re-asked (up to 3 times) until they do.
        A stored schema that breaks the rules (saved before they were checked, with a remote
        `$ref` say) fails the turn instead."""
        key = json.dumps(schema, sort_keys=True)
        agent = self._structured.get(key)
        if agent is not None:
            self._structured.move_to_end(key)
            return agent
        problem = outputschema.problem_of(schema)
        if problem is not None:
            raise InvalidInputError(
                f"the worker's outputSchema {problem}", code="invalid_output_schema"
            )
        output_type = StructuredDict(outputschema.for_model(schema), name=OUTPUT_TOOL)
        agent = Agent(
            output_type=output_type,
            retries={"output": 3},
            deps_type=Toolbox,
            toolsets=[self._toolset],
        )
        agent.output_validator(_schema_validator(outputschema.validator_for(schema)))
        self._structured[key] = agent
        if len(self._structured) > STRUCTURED_AGENTS_KEPT:
            self._structured.popitem(last=False)
        return agent

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
            result = await self._titles.run(
                text[:4000],
                model=await self._catalog.get(model_name),
                model_settings=self._settings,
                usage_limits=UsageLimits(request_limit=1),
            )
        except Exception:
            logger.warning("title generation failed", exc_info=True)
            return None, Usage()
        title = result.output.strip().removeprefix("Title:").strip().strip("\"'").strip()
        return (title[:TITLE_MAX_LENGTH] or None), _usage(result.usage)


class TurnRun:
    """One run of a turn's agent loop.

    A live turn streams its model requests token by token; a quiet one (nobody watching) makes
    plain requests and reports the same chunks once each request is done.
    """

    def __init__(
        self,
        request: TurnRequest,
        agent: Agent[Toolbox, Any],
        options: dict[str, Any],
        toolbox: Toolbox,
        emit: Callable[[Chunk], None],
    ) -> None:
        self._request = request
        self._agent = agent
        self._options = options
        self._toolbox = toolbox
        self._emit = emit
        self._builder = UIMessageBuilder(request.message_id)
        self._stream = TurnEventStream(
            run_input=None, sdk_version=6, server_message_id=request.message_id
        )
        self._stream.model_name = request.model_name
        self._usage: Callable[[], Usage] = Usage

    async def run(self) -> TurnResult:
        request, agent, options, toolbox = self._request, self._agent, self._options, self._toolbox
        prompt = turn_prompt(request.input, request.attachments, toolbox.offered)
        if request.live:
            async with agent.run_stream_events(prompt, **options) as events:
                self._usage = partial(_run_usage, events)
                await self._translate(events)
                result, usage = events.result, _run_usage(events)
                new_messages = events.new_messages() if result is not None else []
        else:
            quiet = QuietRun(agent, prompt, options)
            self._usage = lambda: _usage(quiet.usage)
            await self._translate(quiet.events())
            result, usage, new_messages = quiet.result, _usage(quiet.usage), quiet.messages()
        ui_message = self._builder.message()
        toolbox.cite_found(_text_of(ui_message))
        done = _done_by(toolbox)
        stream = self._stream
        if result is None or stream.failure is not None:
            failure = stream.failure or TurnError("internal_error", "the run ended unexpectedly")
            text = _text_of(ui_message)
            if failure.code == BUDGET_EXHAUSTED:
                return TurnResult(
                    text, None, usage, None, ui_message, None, BUDGET_EXHAUSTED, **done
                )
            detail = stream.failure_detail
            return TurnResult(
                text, None, usage, None, ui_message, failure, failure_detail=detail, **done
            )
        output = result.output
        structured = dict(output) if request.output_schema is not None else None
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        messages = ModelMessagesTypeAdapter.dump_json(new_messages)
        incomplete = BUDGET_EXHAUSTED if toolbox.wrapping_up else None
        return TurnResult(text, structured, usage, messages, ui_message, None, incomplete, **done)

    def so_far(self) -> TurnResult:
        """What a run stopped half-way had done: its text and message so far, what it spent,
        the pages it fetched and the files it wrote."""
        ui_message = self._builder.message()
        text = _text_of(ui_message)
        return TurnResult(text, None, self._usage(), None, ui_message, **_done_by(self._toolbox))

    async def _translate(self, events: AsyncIterator[Any]) -> None:
        async for library_chunk in self._stream.transform_stream(events):
            chunk = to_chunk(library_chunk)
            if chunk is not None:
                self._builder.add(chunk)
                self._emit(chunk)


def _schema_validator(validator: Draft7Validator) -> Callable[[JSONObject], JSONObject]:
    def validate(output: JSONObject) -> JSONObject:
        problems = [
            f"{'/'.join(str(step) for step in error.absolute_path) or '(root)'}: {error.message}"
            for error in validator.iter_errors(output)
        ]
        if problems:
            raise ModelRetry(
                "The answer does not match the required JSON schema: " + "; ".join(problems[:10])
            )
        return output

    return validate


def _limits(caps: BudgetCaps) -> UsageLimits:
    """The hard stop behind the wrap-up: tool calls and tokens are counted by the toolset, which
    withdraws the tools in time for a last answer (a library limit would end the run first)."""
    return UsageLimits(request_limit=caps.requests)


def _done_by(toolbox: Toolbox) -> dict[str, Any]:
    """What the turn's tools left behind, as `TurnResult` fields."""
    return {
        "sources": tuple(toolbox.sources.values()),
        "files": tuple(toolbox.changed.values()),
        "deleted_files": tuple(sorted(toolbox.deleted)),
    }


def _decode_history(history: list[bytes]) -> list[ModelMessage]:
    messages: list[ModelMessage] = []
    for blob in history:
        messages.extend(ModelMessagesTypeAdapter.validate_json(blob))
    return messages


def _run_usage(events: AgentRunEvents[Any]) -> Usage:
    try:
        return _usage(events.usage)
    except UserError:  # the run failed before it started: nothing was spent
        return Usage()


def _usage(usage: RunUsage) -> Usage:
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        requests=usage.requests,
        tool_calls=usage.tool_calls,
    )


def _text_of(message: JSONObject) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")
