"""Running a claimed turn: the agent loop, its events, its title, its outcome; and recovery
of turns whose runner died."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from kennel.agent.loop import Resumption
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime, TurnRequest, TurnResult
from kennel.agent.stream import ABORT_CHUNK, encode_chunk, stream_end
from kennel.clock import Clock
from kennel.config import Settings
from kennel.errors import KennelError, LeaseLostError
from kennel.files.folder import WorkspaceFolder
from kennel.files.workspace import Workspaces, download_url
from kennel.flags import Flag
from kennel.models import (
    CANCELLED,
    Budget,
    BudgetCaps,
    TaskStatus,
    TurnContext,
    TurnError,
    TurnOutcome,
    TurnStep,
)
from kennel.models.jobs import TURN_JOB, Job, TurnJob
from kennel.services.backoff import backoff_seconds
from kennel.services.billing import add_usage, budget_caps, credits_for
from kennel.services.jobs import Attempt
from kennel.services.tasks import is_own_title
from kennel.storage import Store, Subscription, cancel_topic, task_topic

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
_PREAMBLE = frozenset({"start", "start-step"})
"""Chunks a turn's stream opens with before the model has said anything."""
RETRY_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
"""A run that raised is tried again after 5 s, then 4 times longer each time up to 5 min."""


def failure_chunks(message: str, *, started: bool, turn_id: str) -> list[dict[str, Any]]:
    """How a stream ends when a turn fails outside the agent loop (spec §16.11)."""
    ending = [{"type": "error", "errorText": message}, {"type": "finish", "finishReason": "error"}]
    return stream_end(ending, started=started, message_id=turn_id)


class EventSink:
    """Buffers a run's chunks and appends them to the task's log in small batches.

    Batches are written while someone may be following the task live (`is_watched`); a run
    nobody watches writes everything in its final transaction, so a turn costs one write.
    Writes are at least `FLUSH_SECONDS` apart, counted from the run's start: a chunk that
    comes after a quiet spell (the model's first token, after it thought) is written at once,
    and the chunks that follow it close behind wait for the next write. Each step's first
    chunk after its preamble (the model's first word or tool call of that step) is written at
    once whenever it comes, so a reader sees the first token of a quick model without waiting
    for the window or for the run's end, in the answer after a tool call as in the first. A
    run that ends within `FLUSH_SECONDS` of a step's start writes the rest with its end. A
    lost lease surfaces here as `LeaseLostError`.
    """

    def __init__(
        self,
        append: Callable[[list[str]], Awaitable[object]],
        is_watched: Callable[[], bool] = lambda: True,
    ) -> None:
        self._append = append
        self._is_watched = is_watched
        self._buffer: list[str] = []
        self._dirty = Flag()
        self._closing = False
        self._hurry = Flag()
        """Set by a step's first chunk and by `close()`: the batching window ends early."""
        # One write of the log at a time, so batches land in the order they were told.
        self._writing = asyncio.Lock()
        self.emitted = 0
        self._step_heard = False
        """Whether the model said anything yet in the step under way."""
        self._written_at = asyncio.get_running_loop().time()

    def emit(self, chunk: dict[str, Any]) -> None:
        self._buffer.append(encode_chunk(chunk))
        self.emitted += 1
        kind = chunk["type"]
        if kind in _PREAMBLE:
            self._step_heard = False
        elif not self._step_heard:
            self._step_heard = True
            self._hurry.set()
        self._dirty.set()

    async def run(self) -> None:
        # `close()` may land at any await below; checking `_closing` before every wait (rather
        # than trusting `_dirty`, which this loop clears) is what guarantees the loop ends.
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._dirty.wait()
            wait = self._written_at + FLUSH_SECONDS - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._hurry.wait()
                if self._closing:
                    return
            self._dirty.clear()
            self._hurry.clear()
            if self._buffer and self._is_watched():
                async with self._writing:
                    batch, self._buffer = self._buffer, []
                    await self._append(batch)
                self._written_at = loop.time()

    async def keep(self, write: Callable[[list[str]], Awaitable[object]]) -> None:
        """Hand what is buffered to `write` (a step's transaction), once any batch on its way
        to the log is written."""
        async with self._writing:
            batch, self._buffer = self._buffer, []
            await write(batch)

    def close(self) -> list[str]:
        """Stop flushing; returns what is left for the final transaction."""
        self._closing = True
        self._dirty.set()
        self._hurry.set()
        rest, self._buffer = self._buffer, []
        return rest


class TurnService:
    """The `turn` kind of job: runs a claimed turn step by step and records how it ended."""

    def __init__(
        self,
        store: Store,
        runtime: AgentRuntime,
        catalog: ModelCatalog,
        clock: Clock,
        settings: Settings,
        workspaces: Workspaces,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._catalog = catalog
        self._workspaces = workspaces
        self._clock = clock
        self._settings = settings
        self._lease = timedelta(seconds=settings.job_lease_seconds)
        self._rng = random.Random()  # noqa: S311 (jitter, not secrets)

    kind = TURN_JOB
    cut_short_on_stop = True

    def backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, first=RETRY_SECONDS, most=RETRY_MAX_SECONDS, rng=self._rng)

    async def attempt(self, job: Job) -> Attempt[None]:
        await self.run(job)
        return Attempt(settled=True)

    async def run(self, claimed: Job) -> None:
        """Run a claimed turn to its end and record the outcome (unless the lease was lost)."""
        started = time.monotonic()
        title: str | None = None
        # Listen for a cancel before reading the turn: one sent earlier is seen on the turn.
        wakeups = self._store.database.wakeups
        with wakeups.subscribe(cancel_topic(claimed.ref)) as cancelled, _lease_kept(claimed):
            context = await self._store.runs.load_context(claimed.ref)
            job = TurnJob(claimed, context.task.key)
            is_watched = self._watcher_of(job.task_key)
            sink = EventSink(self._append_for(job), is_watched)
            model_name = self._catalog_name(context)
            async with asyncio.TaskGroup() as group:
                flusher = group.create_task(sink.run())
                titling = None
                if model_name is not None and _needs_title(context) and not _cancelled(context):
                    title_request = self._runtime.title_for(model_name, context.turn.input)
                    titling = group.create_task(title_request)
                live = context.turn.live or is_watched()
                outcome = await self._run_agent(context, job, sink, cancelled, live=live)
                final = sink.close()
                await flusher
                if titling is not None:
                    title, title_usage = await titling
                    outcome = replace(outcome, usage=add_usage(outcome.usage, title_usage))
            outcome = _billed(outcome, model_name, self._settings, started)
            await self._store.runs.finish_turn(job, outcome, final, self._clock.now(), title=title)

    async def _run_agent(
        self,
        context: TurnContext,
        job: TurnJob,
        sink: EventSink,
        cancelled: Subscription,
        *,
        live: bool,
    ) -> TurnOutcome:
        if _cancelled(context):  # before it started: nothing to stop
            logger.info("turn %s: cancelled before it started", job.turn_id)
            for chunk in stream_end([ABORT_CHUNK], started=False, message_id=job.turn_id):
                sink.emit(chunk)
            return TurnOutcome(status=TaskStatus.ABORTED, incomplete_reason=CANCELLED)
        try:
            model_name = self._catalog.name_for(context.worker.model)
            request = TurnRequest(
                model_name=model_name,
                instructions=context.worker.instructions,
                output_schema=context.worker.output_schema,
                input=context.turn.input,
                history=context.history,
                caps=self._caps(context.turn.budget),
                message_id=job.turn_id,
                live=live,
                attachments=context.turn.attachments,
                **self._workspace_of(context),
            )
            turn = await self._runtime.turn(request, sink.emit)
            if context.told or context.steps:
                told = [json.loads(body) for body in context.told]
                turn.resume(Resumption(context.steps, told))
                logger.info(
                    "turn %s: taken over at step %d (attempt %d)",
                    job.turn_id,
                    len(context.steps),
                    job.attempts,
                )
            turn.keep_steps(partial(self._keep_step, job, sink))
            result = await self._until_cancelled(job, turn.run(), cancelled)
        except KennelError as error:
            failure = TurnError(error.code, error.message)
            _log_failure(context, failure, f"model {self._catalog_name(context) or 'none'}")
            return self._failed(sink, job, failure)
        if result is None:
            sink.emit(ABORT_CHUNK)
            return replace(
                _outcome(turn.so_far()),
                status=TaskStatus.ABORTED,
                incomplete_reason=CANCELLED,
                model_messages=None,
            )
        if result.error is not None:
            _log_failure(context, result.error, result.failure_detail)
        return _outcome(result)

    async def _keep_step(self, job: TurnJob, sink: EventSink, step: TurnStep) -> None:
        """A finished step, kept with the chunks told so far before the next step starts."""

        async def write(bodies: list[str]) -> None:
            now = self._clock.now()
            await self._store.runs.save_step(job, step, bodies, now, self._lease)

        await sink.keep(write)

    async def _until_cancelled(
        self, job: TurnJob, run: Coroutine[Any, Any, TurnResult], cancelled: Subscription
    ) -> TurnResult | None:
        """The run's result, or None if the turn was cancelled first (`cancel_topic`): the run
        is then stopped at once, its model request and any sandbox process with it."""
        running = asyncio.ensure_future(run)
        stopping = asyncio.ensure_future(cancelled.wait(math.inf))
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not running.done():
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
        if running.cancelled():
            logger.info("turn %s: cancelled, its run stopped", job.turn_id)
            return None
        return running.result()

    def _workspace_of(self, context: TurnContext) -> dict[str, Any]:
        """The worker's workspace and its download links, as `TurnRequest` fields."""
        worker = context.worker
        root = self._workspaces.folder(worker.organization_id, worker.id)
        return {
            "folder": WorkspaceFolder(root),
            "file_url": partial(download_url, self._settings.base_url, worker.id),
        }

    def _failed(self, sink: EventSink, job: TurnJob, error: TurnError) -> TurnOutcome:
        for chunk in failure_chunks(error.message, started=sink.emitted > 0, turn_id=job.turn_id):
            sink.emit(chunk)
        return TurnOutcome(status=TaskStatus.ERROR, error=error)

    def _catalog_name(self, context: TurnContext) -> str | None:
        try:
            return self._catalog.name_for(context.worker.model)
        except KennelError:
            return None

    def _caps(self, budget: Budget) -> BudgetCaps:
        return budget_caps(budget, self._settings)

    def _watcher_of(self, task_key: int) -> Callable[[], bool]:
        """Whether anyone may be following the task live: a reader here subscribes to its
        topic, one in another process (PostgreSQL) says so every few seconds."""
        wakeups, topic = self._store.database.wakeups, task_topic(task_key)
        return lambda: wakeups.is_watched(topic)

    def _append_for(self, job: TurnJob) -> Callable[[list[str]], Awaitable[object]]:
        async def append(bodies: list[str]) -> object:
            return await self._store.runs.append_events(job, bodies, self._clock.now(), self._lease)

        return append

    async def settle(
        self, job: Job, attempt: Attempt[None], retry_at: datetime | None, now: datetime
    ) -> bool:
        """A run that failed outside its own ending (it raised, or its runner kept dying): the
        turn waits for another attempt, or ends `error` with the reason."""
        reason = attempt.error or "the run failed"
        if retry_at is not None:
            return await self._store.jobs.conclude(job, now, reason, retry_at)
        turn = await self._store.tasks.get_turn(job.ref)
        error = TurnError(attempt.code, reason)
        chunks = failure_chunks(
            error.message,
            started=turn is not None and turn.first_event_seq is not None,
            turn_id=job.ref,
        )
        logger.warning("turn %s failed: %s (%s)", job.ref, error.message, error.code)
        outcome = TurnOutcome(status=TaskStatus.ERROR, error=error)
        bodies = [encode_chunk(chunk) for chunk in chunks]
        return await self._store.runs.fail_turn(job, outcome, bodies, now)


def _cancelled(context: TurnContext) -> bool:
    """Whether the turn was cancelled while it waited to start (see `RunStore.cancel_task`)."""
    return context.turn.incomplete_reason == CANCELLED


@contextmanager
def _lease_kept(job: Job) -> Iterator[None]:
    """A run whose job was taken from it (lease expired, or cancelled without it) stops."""
    try:
        yield
    except* LeaseLostError:
        logger.warning("turn %s: lease lost, its run stopped", job.ref)


def _log_failure(context: TurnContext, error: TurnError, detail: str | None) -> None:
    """Every failed turn reaches the operator's log, with what the client was told and, for
    provider failures, the provider, URL and HTTP status (`detail`)."""
    logger.warning(
        "turn %s of task %s failed: %s (%s); %s",
        context.turn.id,
        context.task.id,
        error.message,
        error.code,
        detail or "no further detail",
    )


def _needs_title(context: TurnContext) -> bool:
    return context.turn.seq == 0 and not is_own_title(context.turn.input)


def _outcome(result: TurnResult) -> TurnOutcome:
    return TurnOutcome(
        status=TaskStatus.ERROR if result.error else TaskStatus.COMPLETED,
        output_text=result.output_text,
        structured_output=result.structured_output,
        usage=result.usage,
        error=result.error,
        incomplete_reason=result.incomplete_reason,
        model_messages=result.model_messages,
        ui_message=result.ui_message,
        sources=result.sources,
        files=result.files,
        deleted_files=result.deleted_files,
    )


def _billed(
    outcome: TurnOutcome, model_name: str | None, settings: Settings, started: float
) -> TurnOutcome:
    usage = outcome.usage
    credits = credits_for(usage, model_name or "", settings.model_prices)
    return replace(
        outcome,
        usage=replace(usage, credits=credits),
        duration_ms=int((time.monotonic() - started) * 1000),
    )
