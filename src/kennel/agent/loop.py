"""One turn's agent loop, step by step: a model response, then the tool calls it asked for.

The loop talks to the model through pydantic-ai's model classes (`Model.request` and
`request_stream`, by way of `pydantic_ai.direct`), so every provider works, but it runs its own
steps rather than pydantic-ai's agent graph: a step is two awaits and a few dicts, and its end is
a natural point to record what the turn has done so far.

Budgets (spec §16.8): before each model request the loop decides whether it must be the last
one the caps allow; that request, the wrap-up, offers no tools and asks for the best answer
from what the turn has. A worker with an output schema answers through the `final_result` tool,
checked against the schema and asked again (up to `OUTPUT_RETRIES` times) when it does not
match.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pydantic_ai import direct
from pydantic_ai.exceptions import UnexpectedModelBehavior, UsageLimitExceeded
from pydantic_ai.messages import (
    InstructionPart,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    RetryFeedbackPart,
    RetryInfo,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition

from kennel.agent import outputschema
from kennel.agent.attachments import turn_prompt
from kennel.agent.chunks import ChunkWriter
from kennel.agent.failures import BUDGET_EXHAUSTED, classify, describe
from kennel.agent.stream import Chunk
from kennel.agent.toolbox import Toolbox
from kennel.agent.toolset import (
    WRAP_UP,
    CallOutcome,
    ToolCatalog,
    output_return,
    skipped_return,
)
from kennel.models import JSONObject, Source, TurnError, TurnStep, Usage, WorkspaceFile

_Retry = TypeVar("_Retry", ToolReturnPart, RetryFeedbackPart)

OUTPUT_TOOL = "final_result"
OUTPUT_TOOL_DESCRIPTION = "The final response which ends this conversation"
OUTPUT_RETRIES = 3
TEXT_INSTEAD_OF_TOOL = f"Please include your response in a call of the {OUTPUT_TOOL} tool."


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


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """What one turn runs with; built by the runtime from the turn's request."""

    model: Model
    model_name: str
    settings: ModelSettings
    instructions: str
    prompt: str
    history: list[ModelMessage]
    output_schema: JSONObject | None
    live: bool


class _Answered(Exception):
    """The model gave its final answer (text, or structured output that matches); `closing`
    answers the calls of the final response."""

    def __init__(
        self, text: str, structured: JSONObject | None = None, closing: list[Any] | None = None
    ) -> None:
        self.text = text
        self.structured = structured
        self.closing = closing or []


Checkpoint = Callable[[TurnStep], Awaitable[None]]
"""Keeps a finished step (and the chunks told so far) before the next one starts."""


@dataclass(frozen=True, slots=True)
class Resumption:
    """Where a turn taken over after a crash stands: its finished steps, and the chunks its
    stream already holds."""

    steps: list[TurnStep]
    told: list[Chunk]


class TurnLoop:
    """Runs one turn; `run()` once, and `so_far()` tells what a stopped run had done."""

    def __init__(
        self,
        plan: TurnPlan,
        tools: ToolCatalog,
        box: Toolbox,
        message_id: str,
        emit: Callable[[Chunk], None],
        attachments: Any = (),
    ) -> None:
        self._plan = plan
        self._tools = tools
        self._box = box
        self._writer = ChunkWriter(message_id, emit)
        self._spent = Usage()
        self._last_size = 0
        self._output_retries = 0
        self._steps = 0
        self._checkpoint: Checkpoint | None = None
        schema = plan.output_schema
        self._validator = None if schema is None else outputschema.validator_for(schema)
        self._output_tool = None if schema is None else _output_tool(schema)
        prompt = turn_prompt(plan.prompt, attachments, box.offered)
        first = ModelRequest(parts=[UserPromptPart(prompt)], instructions=plan.instructions or None)
        self._new: list[ModelMessage] = [first]

    def keep_steps(self, checkpoint: Checkpoint) -> None:
        """Have every finished step that is not the last one kept by `checkpoint`."""
        self._checkpoint = checkpoint

    def resume(self, resumption: Resumption) -> None:
        """Go on from the last finished step: the conversation, the counters and what the tools
        did as that step left them; only a step that was in flight runs again."""
        self._writer.resume(resumption.told)
        if not resumption.steps:
            return
        for step in resumption.steps:
            self._new += ModelMessagesTypeAdapter.validate_json(step.messages)
        last = resumption.steps[-1]
        state = last.state
        self._steps = last.step
        self._spent = Usage(**state["usage"])
        self._last_size = state["lastSize"]
        self._output_retries = state["outputRetries"]
        self._box.restore(state["tools"])

    def _state(self) -> JSONObject:
        spent = self._spent
        return {
            "usage": {
                "input_tokens": spent.input_tokens,
                "output_tokens": spent.output_tokens,
                "requests": spent.requests,
                "tool_calls": spent.tool_calls,
            },
            "lastSize": self._last_size,
            "outputRetries": self._output_retries,
            "tools": self._box.state(),
        }

    async def run(self) -> TurnResult:
        plan = self._plan
        await self._tools.prepare(plan.model)
        self._writer.start()
        try:
            while True:
                await self._step()
        except _Answered as answer:
            return self._answered(answer)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return self._failed(error)

    def so_far(self) -> TurnResult:
        """What a run stopped half-way had done: its text and message so far, what it spent,
        the pages it fetched and the files it wrote."""
        message = self._writer.message()
        return TurnResult(_text_of(message), None, self._spent, None, message, **self._done())

    async def _step(self) -> None:
        box, spent = self._box, self._spent
        if box.tokens_spent(spent):
            raise UsageLimitExceeded(f"the token budget of {box.caps.tokens} is spent")
        if box.caps.requests is not None and spent.requests >= box.caps.requests:
            raise UsageLimitExceeded(f"the request budget of {box.caps.requests} is spent")
        if not box.wrapping_up and box.must_wrap_up(spent, self._last_size):
            box.wrapping_up = True
        self._writer.start_step()
        kept = len(self._new)
        response = await self._request(self._parameters())
        self._new.append(response)
        usage = response.usage
        self._last_size = usage.input_tokens + usage.output_tokens
        self._spent = replace(
            spent,
            requests=spent.requests + 1,
            input_tokens=spent.input_tokens + usage.input_tokens,
            output_tokens=spent.output_tokens + usage.output_tokens,
        )
        returns = await self._act_on(response)
        self._writer.finish_step()
        if returns:
            self._new.append(
                ModelRequest(parts=returns, instructions=self._plan.instructions or None)
            )
        self._steps += 1
        if self._checkpoint is not None:
            added = ModelMessagesTypeAdapter.dump_json(self._new[kept:])
            await self._checkpoint(TurnStep(self._steps, added, self._state()))

    async def _request(self, parameters: ModelRequestParameters) -> ModelResponse:
        plan, messages = self._plan, [*self._plan.history, *self._new]
        if not plan.live:
            response = await direct.model_request(
                plan.model,
                messages,
                model_settings=plan.settings,
                model_request_parameters=parameters,
                instrument=False,
            )
            for part in response.parts:
                self._writer.whole_part(part)
            return response
        async with direct.model_request_stream(
            plan.model,
            messages,
            model_settings=plan.settings,
            model_request_parameters=parameters,
            instrument=False,
        ) as stream:
            async for event in stream:
                self._writer.stream_event(event)
            return stream.get()

    def _parameters(self) -> ModelRequestParameters:
        box = self._box
        tools = [] if box.wrapping_up else self._tools.definitions(box.offered)
        return request_parameters(
            self._plan.instructions, tools, self._output_tool, wrapping_up=box.wrapping_up
        )

    async def _act_on(self, response: ModelResponse) -> list[ToolReturnPart | RetryFeedbackPart]:
        """The tool calls of `response`, run; raises `_Answered` once the turn has its answer."""
        calls = [part for part in response.parts if isinstance(part, ToolCallPart)]
        if self._validator is None:
            if not calls:
                raise _Answered(_response_text(response))
            return [*await self._run_calls(calls)]
        retries: list[ToolReturnPart | RetryFeedbackPart] = []
        for call in calls:
            if call.tool_name != OUTPUT_TOOL:
                continue
            structured, problem = self._check_answer(call)
            if structured is not None:
                # What else the response asked for does not run, but is answered: a provider
                # wants every call of the history answered when the next turn sends it.
                closing = [output_return(call, None)]
                closing += [skipped_return(other) for other in calls if other is not call]
                raise _Answered(json.dumps(structured, ensure_ascii=False), structured, closing)
            retries.append(self._retry(output_return(call, problem)))
        if not calls:  # text where an answer in the schema was due
            return [
                self._retry(RetryFeedbackPart(TEXT_INSTEAD_OF_TOOL, retry=RetryInfo("no_output")))
            ]
        work = [call for call in calls if call.tool_name != OUTPUT_TOOL]
        return [*retries, *await self._run_calls(work)]

    def _check_answer(self, call: ToolCallPart) -> tuple[JSONObject | None, str]:
        """The structured answer if it matches the schema, else why not; told in the stream."""
        assert self._validator is not None
        try:
            value = call.args_as_dict()
        except ValueError:
            value = None
        problem = _schema_problem(self._validator, value)
        if problem is not None or not isinstance(value, dict):
            problem = problem or "The answer is not a JSON object"
            self._writer.tool_input_error(call, problem)
            return None, problem
        self._writer.tool_input(call)
        self._writer.tool_output(call.tool_call_id, "Final result processed.")
        return value, ""

    def _retry(self, part: _Retry) -> _Retry:
        self._output_retries += 1
        if self._output_retries > OUTPUT_RETRIES:
            raise UnexpectedModelBehavior(
                f"Exceeded maximum output retries ({OUTPUT_RETRIES}): the answer never matched "
                "the output schema"
            )
        return part

    async def _run_calls(self, calls: list[ToolCallPart]) -> list[ToolReturnPart]:
        """Run the calls together; each is told in the stream as soon as it is done."""
        results: dict[str, CallOutcome] = {}

        async def run(call: ToolCallPart) -> None:
            outcome = await self._tools.call(self._box, self._plan.model, call)
            results[call.tool_call_id] = outcome
            self._tell(call, outcome)

        async with asyncio.TaskGroup() as group:
            for call in calls:
                group.create_task(run(call))
        # Calls that ran and succeeded are billed; a failed or refused one is not.
        succeeded = sum(
            outcome.input_valid and outcome.error is None for outcome in results.values()
        )
        self._spent = replace(self._spent, tool_calls=self._spent.tool_calls + succeeded)
        return [results[call.tool_call_id].part for call in calls]

    def _tell(self, call: ToolCallPart, outcome: CallOutcome) -> None:
        writer = self._writer
        if not outcome.input_valid:
            writer.tool_input_error(call, outcome.error or "")
            return
        writer.tool_input(call)
        if outcome.error is not None:
            writer.tool_error(call.tool_call_id, outcome.error)
        else:
            writer.tool_output(call.tool_call_id, outcome.output)
        for chunk in outcome.chunks:
            writer.beside(chunk)

    def _answered(self, answer: _Answered) -> TurnResult:
        if answer.closing:
            instructions = self._plan.instructions or None
            self._new.append(ModelRequest(parts=answer.closing, instructions=instructions))
        wrapped_up = self._box.wrapping_up
        self._writer.finish("stop")
        message = self._writer.message()
        self._box.cite_found(_text_of(message) or answer.text)
        messages = ModelMessagesTypeAdapter.dump_json(self._new)
        incomplete = BUDGET_EXHAUSTED if wrapped_up else None
        return TurnResult(
            answer.text,
            answer.structured,
            self._spent,
            messages,
            message,
            None,
            incomplete,
            **self._done(),
        )

    def _failed(self, error: Exception) -> TurnResult:
        failure = classify(error, self._plan.model_name)
        if failure.code == BUDGET_EXHAUSTED:
            self._writer.fail("", reason="length")
            message = self._writer.message()
            return TurnResult(
                _text_of(message),
                None,
                self._spent,
                None,
                message,
                None,
                BUDGET_EXHAUSTED,
                **self._done(),
            )
        self._writer.fail(failure.message)
        message = self._writer.message()
        return TurnResult(
            _text_of(message),
            None,
            self._spent,
            None,
            message,
            failure,
            failure_detail=describe(error, self._plan.model_name),
            **self._done(),
        )

    def _done(self) -> dict[str, Any]:
        """What the turn's tools left behind, as `TurnResult` fields."""
        box = self._box
        return {
            "sources": tuple(box.sources.values()),
            "files": tuple(box.changed.values()),
            "deleted_files": tuple(sorted(box.deleted)),
        }


PARAMETER_SHAPES = 256
"""Request parameters kept, by shape (see `request_parameters`)."""
_shapes: OrderedDict[tuple[Any, ...], ModelRequestParameters] = OrderedDict()


def request_parameters(
    instructions: str,
    tools: list[ToolDefinition],
    output_tool: ToolDefinition | None,
    *,
    wrapping_up: bool,
) -> ModelRequestParameters:
    """A step's request parameters: the same object for the same shape (instructions, tool
    definitions, output tool, wrap-up), so the model's preparation of it is reused
    (`prepared.reuse_prepared_requests`). Never change what this returns."""
    key = (instructions, wrapping_up, tuple(map(id, tools)), id(output_tool))
    known = _shapes.get(key)
    # The parameters hold the definitions, so their ids stay theirs while the entry lives.
    if known is not None:
        _shapes.move_to_end(key)
        return known
    parts = [InstructionPart(content=instructions)] if instructions else []
    if wrapping_up:
        parts.append(InstructionPart(content=WRAP_UP))
    if output_tool is None:
        made = ModelRequestParameters(
            function_tools=tools,
            output_mode="text",
            allow_text_output=True,
            instruction_parts=parts or None,
        )
    else:
        made = ModelRequestParameters(
            function_tools=tools,
            output_mode="tool",
            output_tools=[output_tool],
            allow_text_output=False,
            instruction_parts=parts or None,
        )
    _shapes[key] = made
    if len(_shapes) > PARAMETER_SHAPES:
        _shapes.popitem(last=False)
    return made


def _output_tool(schema: JSONObject) -> ToolDefinition:
    return ToolDefinition(
        name=OUTPUT_TOOL,
        description=OUTPUT_TOOL_DESCRIPTION,
        parameters_json_schema=outputschema.for_model(schema),
        kind="output",
    )


def _schema_problem(validator: Any, value: Any) -> str | None:
    if not isinstance(value, dict):
        return "The answer does not match the required JSON schema: (root): not an object"
    problems = [
        f"{'/'.join(str(step) for step in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(value)
    ]
    if not problems:
        return None
    return "The answer does not match the required JSON schema: " + "; ".join(problems[:10])


def _response_text(response: ModelResponse) -> str:
    return "".join(part.content for part in response.parts if isinstance(part, TextPart))


def _text_of(message: JSONObject) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")
