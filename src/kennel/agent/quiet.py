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

    def __init__(
        self, agent: Agent[Toolbox, Any], prompt: str | Sequence[str], options: dict[str, Any]
    ) -> None:
        self._agent = agent
        self._prompt = prompt
        self._options = options
        self._run: AgentRun[Toolbox, Any] | None = None

    async def events(self) -> AsyncIterator[AgentStreamEvent | AgentRunResultEvent[Any]]:
        """The run's events, told as each step is done (not only at the end), so a run stopped
        half-way has told what it had done: a model's answer once it has arrived, tool results
        once the request carrying them to the model is about to be made."""
        told: set[int] = set()
        replay = Replay()

        def untold(messages: Sequence[ModelMessage]) -> list[ModelMessage]:
            fresh = [message for message in messages if id(message) not in told]
            told.update(id(message) for message in fresh)
            return fresh

        async with self._agent.iter(self._prompt, **self._options) as run:
            self._run = run
            async for node in run:
                pending = [node.request] if isinstance(node, ModelRequestNode) else []
                for event in replay.tell(untold([*run.new_messages(), *pending])):
                    yield event
        result = run.result
        if result is None:
            raise UserError("the run ended without a result")
        for event in replay.tell(untold(result.new_messages())):
            yield event
        for event in replay.finish():
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


class Replay:
    """Tells messages as the events a streamed run emits for them, in the order it emits them.

    A live run announces a tool call once its arguments are validated, just before it runs;
    messages tell only afterwards, by the call's result, whether it ran. So a call is held
    back until its result arrives (or the run ends without one), then told with its verdict:
    `VercelAIEventStream` turns an unvalidated call into a discarded one and an invalid one
    into a `tool-input-error`, and only a call that ran into a tool output.
    """

    def __init__(self) -> None:
        self._calls: dict[str, ToolCallPart] = {}

    def tell(self, messages: Sequence[ModelMessage]) -> list[AgentStreamEvent]:
        """The events of these messages, which follow the ones told before."""
        events: list[AgentStreamEvent] = []
        for message in messages:
            if isinstance(message, ModelResponse):
                for index, part in enumerate(message.parts):
                    events += [
                        PartStartEvent(index=index, part=part),
                        PartEndEvent(index=index, part=part),
                    ]
                    if isinstance(part, ToolCallPart):
                        self._calls[part.tool_call_id] = part
            else:
                for request_part in message.parts:
                    if isinstance(request_part, ToolReturnPart):
                        events += self._result(request_part)
        return events

    def finish(self) -> list[AgentStreamEvent]:
        """Calls the run never answered: it skipped them, having its final result."""
        calls, self._calls = list(self._calls.values()), {}
        return [_call_event(call, None) for call in calls]

    def _result(self, result: ToolReturnPart) -> list[AgentStreamEvent]:
        events: list[AgentStreamEvent] = []
        call = self._calls.pop(result.tool_call_id, None)
        if call is not None:
            events.append(_call_event(call, result.outcome != "retried"))
        done = OutputToolResultEvent if result.tool_name == OUTPUT_TOOL else FunctionToolResultEvent
        events.append(done(result))
        return events


def _call_event(call: ToolCallPart, args_valid: bool | None) -> AgentStreamEvent:
    event = OutputToolCallEvent if call.tool_name == OUTPUT_TOOL else FunctionToolCallEvent
    return event(call, args_valid=args_valid)
