"""Runs whose model requests are not streamed, told afterwards as a streamed run's events.

Streaming every token costs CPU on each chunk (the provider SDK parses it, pydantic-ai merges
it, Kennel encodes it); when nobody watches a turn live that buys nothing. A quiet run makes
one plain request per model call, then replays the run's messages as the native events that
`VercelAIEventStream` translates, so both kinds of run leave the same kind of event log: text
arrives whole instead of token by token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic_ai import Agent, ModelRequestNode
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    OutputToolCallEvent,
    OutputToolResultEvent,
    PartEndEvent,
    PartStartEvent,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.run import AgentRun, AgentRunResult, AgentRunResultEvent
from pydantic_ai.usage import RunUsage

from kennel.agent.toolbox import Toolbox

OUTPUT_TOOL = "final_result"


class QuietRun:
    """One run of `agent`; iterate `events()` once, then read `result`, `usage`, `messages`."""

    def __init__(self, agent: Agent[Toolbox, Any], prompt: str, options: dict[str, Any]) -> None:
        self._agent = agent
        self._prompt = prompt
        self._options = options
        self._run: AgentRun[Toolbox, Any] | None = None

    async def events(self) -> AsyncIterator[AgentStreamEvent | AgentRunResultEvent[Any]]:
        """The run's events, told as each step is done (not only at the end), so a run stopped
        half-way has told what it had done: a model's answer once it has arrived, tool results
        once the request carrying them to the model is about to be made."""
        told: set[int] = set()

        def untold(messages: Sequence[ModelMessage]) -> list[ModelMessage]:
            fresh = [message for message in messages if id(message) not in told]
            told.update(id(message) for message in fresh)
            return fresh

        async with self._agent.iter(self._prompt, **self._options) as run:
            self._run = run
            async for node in run:
                pending = [node.request] if isinstance(node, ModelRequestNode) else []
                for event in replay(untold([*run.new_messages(), *pending])):
                    yield event
        result = run.result
        if result is None:
            raise UserError("the run ended without a result")
        for event in replay(untold(result.new_messages())):
            yield event
        yield AgentRunResultEvent(result)

    @property
    def result(self) -> AgentRunResult[Any] | None:
        return None if self._run is None else self._run.result

    @property
    def usage(self) -> RunUsage:
        return RunUsage() if self._run is None else self._run.usage

    def messages(self) -> list[ModelMessage]:
        return [] if self._run is None else self._run.new_messages()


def replay(messages: Sequence[ModelMessage]) -> list[AgentStreamEvent]:
    """The events a streamed run emits for these messages, in the order it emits them."""
    events: list[AgentStreamEvent] = []
    for message in messages:
        if isinstance(message, ModelResponse):
            for index, part in enumerate(message.parts):
                events += [
                    PartStartEvent(index=index, part=part),
                    PartEndEvent(index=index, part=part),
                ]
            for part in message.parts:
                if isinstance(part, ToolCallPart):
                    call = (
                        OutputToolCallEvent
                        if part.tool_name == OUTPUT_TOOL
                        else FunctionToolCallEvent
                    )
                    events.append(call(part))
        elif isinstance(message, ModelRequest):
            for request_part in message.parts:
                if isinstance(request_part, ToolReturnPart):
                    done = (
                        OutputToolResultEvent
                        if request_part.tool_name == OUTPUT_TOOL
                        else FunctionToolResultEvent
                    )
                    events.append(done(request_part))
    return events
