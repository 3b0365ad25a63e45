"""Tasks and turns: submitting work, following it, and reading what it produced."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar, cast

from kennel import ids
from kennel.agent.models import ModelCatalog
from kennel.agent.stream import ABORT_CHUNK, encode_chunk, stream_end
from kennel.clock import Clock
from kennel.config import Settings
from kennel.errors import ConflictError, CreditsExhaustedError, InvalidInputError, NotFoundError
from kennel.files.workspace import Upload, Workspaces
from kennel.models import (
    CANCELLED,
    Budget,
    Event,
    JSONObject,
    Page,
    Principal,
    StoredTurn,
    Submission,
    Task,
    TaskSnapshot,
    TaskStatus,
    TriggeredBy,
    Turn,
    TurnOutcome,
    Worker,
)
from kennel.models.mail import InboundEmail
from kennel.services.billing import NO_CREDITS, has_credits
from kennel.services.jobs import Handoff
from kennel.services.workers import WorkerDraft, WorkerService
from kennel.storage import WATCH_SECONDS, Store, Subscription, task_topic, turn_topic

PROVISIONAL_TITLE_LENGTH = 80
POLL_SECONDS = 1.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TaskRequest:
    input: str
    budget: Budget = Budget.STANDARD
    task_id: str | None = None
    worker_id: str | None = None
    triggered_by: TriggeredBy = TriggeredBy.API
    metadata: JSONObject = field(default_factory=dict)
    uploads: Sequence[Upload] = ()
    live: bool = False
    """The caller will follow the turn as a stream."""
    email: InboundEmail | None = None
    """The mail that asked for the turn: its answer is mailed back."""


@dataclass(frozen=True, slots=True)
class Submitted:
    worker: Worker
    task: Task
    turn: Turn
    events_after: int
    """The task's last event sequence number before this turn: its events all come later."""


@dataclass(frozen=True, slots=True)
class WorkerState:
    """What `Worker` objects describe: a worker and one run (turn) of one of its tasks."""

    worker: Worker
    snapshot: TaskSnapshot | None
    turn: Turn | None


class TaskService:
    def __init__(
        self,
        store: Store,
        workers: WorkerService,
        workspaces: Workspaces,
        catalog: ModelCatalog,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._store = store
        self._workers = workers
        self._workspaces = workspaces
        self._catalog = catalog
        self._clock = clock
        self._settings = settings
        self._handoff: Handoff | None = None

    async def submit(
        self, principal: Principal, request: TaskRequest, *, turn_id: str | None = None
    ) -> Submitted:
        """Durably store a new turn (and its task, and maybe a new worker); a runner will run it."""
        task_id = request.task_id or ids.task_id()
        if not ids.is_valid_client_id(task_id):
            raise InvalidInputError(
                "taskId must be 1-128 letters, digits or '._:-', starting with a letter or digit"
            )
        worker, create_worker = await self._worker_for(principal, request, task_id)
        await self._catalog.check(worker.model)
        saved = [
            await self._workspaces.save(worker.organization_id, worker.id, upload)
            for upload in request.uploads
        ]
        # A name sent twice is one file: the bytes sent last are the ones in the workspace.
        files = {file.path: file for file in saved}.values()

        def accept_existing(task: Task) -> None:
            if request.worker_id is not None and task.worker_id != request.worker_id:
                raise ConflictError(f"task {task_id} belongs to another worker")
            if task.archived_at is not None:
                raise ConflictError(f"task {task_id} is archived and takes no new turns")

        submission = Submission(
            organization_id=principal.organization_id,
            task_id=task_id,
            worker=worker,
            input=request.input,
            budget=request.budget,
            triggered_by=request.triggered_by,
            created_by_user_id=principal.user_id,
            provisional_title=provisional_title(request.input),
            metadata=request.metadata,
            turn_id=turn_id or ids.turn_id(),
            max_attempts=self._settings.job_max_attempts,
            create_worker=create_worker,
            files=tuple(files),
            live=request.live,
            email=request.email,
        )
        stored = await self._store_submission(submission, accept_existing)
        return Submitted(worker, stored.task, stored.turn, stored.events_after)

    def start_turns_on(self, handoff: Handoff) -> None:
        """Store new turns claimed by this process's runner when it has a slot free."""
        self._handoff = handoff

    async def _store_submission(
        self, submission: Submission, accept_existing: Callable[[Task], None]
    ) -> StoredTurn:
        handoff = self._handoff
        claimant = handoff.reserve() if handoff is not None else None
        if handoff is None or claimant is None:
            return await self._store.tasks.submit(submission, self._clock.now(), accept_existing)

        async def store_and_start() -> StoredTurn:
            try:
                stored = await self._store.tasks.submit(
                    replace(submission, claimant=claimant), self._clock.now(), accept_existing
                )
            except BaseException:
                handoff.release()
                raise
            if stored.job is None:  # an earlier turn of the task holds this one back
                handoff.release()
            else:
                handoff.start(stored.job)
            return stored

        # Shielded: a caller that goes away while the turn is stored must not leave it
        # claimed by a slot that never starts it (it would wait for its lease to run out).
        return await asyncio.shield(store_and_start())

    async def _worker_for(
        self, principal: Principal, request: TaskRequest, task_id: str
    ) -> tuple[Worker, bool]:
        """The worker that runs the turn, and whether it must be created with the task.

        Refuses an organization without credits, a worker the caller can't see, and a task
        of another worker.
        """
        context = await self._store.tasks.submission_context(
            principal.organization_id, task_id, request.worker_id
        )
        if not has_credits(context.credit_balance):
            raise CreditsExhaustedError(NO_CREDITS)
        if context.task is None and request.worker_id is None:
            draft = WorkerDraft(instructions=request.input)
            return self._workers.new_worker(principal, draft), True
        worker = context.worker
        if worker is None or not worker.is_visible_to(principal):
            missing = (
                f"task {task_id}" if context.task is not None else f"worker {request.worker_id}"
            )
            raise NotFoundError(f"{missing} not found")
        if request.worker_id is not None and request.worker_id != worker.id:
            raise ConflictError(f"task {task_id} belongs to another worker")
        return worker, False

    async def answer(
        self, principal: Principal, request: TaskRequest, keepalive: float
    ) -> tuple[Submitted, AsyncGenerator[WorkerState | None]]:
        """Submit a turn, and what to say while it runs: None every `keepalive` seconds it runs
        on, then its final state.

        The turn's end is awaited from before it is stored, so learning that it ended takes no
        read; after a `keepalive` without a wake-up, `wait_for_turn` reads it (wake-ups are
        hints). Closing the generator (or dropping it) stops the waiting.
        """
        return await _submitted_and(self._submitted_then_news(principal, request, keepalive))

    async def _submitted_then_news(
        self, principal: Principal, request: TaskRequest, keepalive: float
    ) -> AsyncGenerator[Submitted | WorkerState | None]:
        async with self._submitted_with_its_end(principal, request) as (submitted, ended):
            yield submitted
            done = await ended.wait(keepalive)
        turn_id = submitted.turn.id
        while not done:
            yield None
            done = await self.wait_for_turn(turn_id, keepalive)
        yield await self.state_of_task(submitted.worker, submitted.task.key, turn_id)

    @asynccontextmanager
    async def _submitted_with_its_end(
        self, principal: Principal, request: TaskRequest
    ) -> AsyncIterator[tuple[Submitted, Subscription]]:
        """Submit a turn, subscribed to its end from before it is stored: no end is missed,
        however soon it comes. The subscription lasts as long as the block."""
        turn_id = ids.turn_id()
        with self._store.database.wakeups.subscribe(turn_topic(turn_id)) as ended:
            yield await self.submit(principal, request, turn_id=turn_id), ended

    async def wait_for_turn(self, turn_id: str, seconds: float) -> bool:
        """Whether the turn has ended, waiting up to `seconds` for it to.

        Its end is published (in every process) when it is recorded, so one read before
        waiting is enough: a wake-up on the turn's own topic means it has ended.
        """
        with self._store.database.wakeups.subscribe(turn_topic(turn_id)) as ended:
            turn = await self._store.tasks.get_turn(turn_id)
            if turn is None:
                raise NotFoundError(f"turn {turn_id} not found")
            return turn.status.is_terminal or await ended.wait(seconds)

    async def cancel(self, principal: Principal, task_id: str) -> TaskSnapshot:
        """Stop the task (extension `POST /api/tasks/{taskId}/cancel`): turns not started yet
        end `aborted` at once; the running one is stopped where it is (its model request and
        any sandbox process with it), keeps the text it had written and ends `aborted`, with
        `incompleteReason: "cancelled"`. Whoever may add turns to the task may cancel it.
        Cancelling an aborted task again changes nothing; a finished one is a conflict."""
        task = await self.visible_task(principal, task_id)
        if task.status is TaskStatus.COMPLETED or task.status is TaskStatus.ERROR:
            raise ConflictError(f"task {task_id} has already ended ({task.status.value})")
        cancelled = await self._store.runs.cancel_task(task.key, self._clock.now())
        for turn_id in cancelled.running:
            if not await self.wait_for_turn(turn_id, self._settings.cancel_grace_seconds):
                await self._abort_unresponsive(turn_id)
        return await self._store.tasks.snapshot(task.key)

    async def _abort_unresponsive(self, turn_id: str) -> None:
        """End a cancelled turn whose run did not stop in time (say its process is gone)."""
        turn = await self._store.tasks.get_turn(turn_id)
        started = turn is None or turn.first_event_seq is not None
        chunks = stream_end([ABORT_CHUNK], started=started, message_id=turn_id)
        outcome = TurnOutcome(status=TaskStatus.ABORTED, incomplete_reason=CANCELLED)
        bodies = [encode_chunk(chunk) for chunk in chunks]
        await self._store.runs.force_abort(turn_id, outcome, bodies, self._clock.now())

    async def stream(
        self, principal: Principal, request: TaskRequest, idle_timeout: float
    ) -> tuple[Submitted, AsyncGenerator[Event | None]]:
        """Submit a turn, and its events as it runs (see `follow`).

        The turn's end is awaited from before it is stored, and its task's changes from the
        moment it is: the stream starts without a read, since nothing came after the turn yet.
        An event written before that moment (a run quicker than the reply's start) is read at
        the next change. Closing the generator (or dropping it) stops the following.
        """
        return await _submitted_and(self._submitted_then_events(principal, request, idle_timeout))

    async def _submitted_then_events(
        self, principal: Principal, request: TaskRequest, idle_timeout: float
    ) -> AsyncGenerator[Submitted | Event | None]:
        async with self._submitted_with_its_end(principal, request) as (submitted, wakeup):
            task_key, turn_id = submitted.task.key, submitted.turn.id
            wakeup.add(task_topic(task_key))
            yield submitted
            events = self._events(wakeup, task_key, submitted.events_after, turn_id, idle_timeout)
            async for event in events:
                yield event

    async def follow(
        self, task_key: int, after: int, *, turn_id: str | None, idle_timeout: float
    ) -> AsyncIterator[Event | None]:
        """The task's events after `after`, live, until the turn (or the whole task) has ended.

        Yields None whenever `idle_timeout` seconds pass without an event (time for a keep-alive).
        """
        with self._store.database.wakeups.subscribe(task_topic(task_key)) as wakeup:
            async for event in self._events(
                wakeup, task_key, after, turn_id, idle_timeout, read_first=True
            ):
                yield event

    async def _events(
        self,
        wakeup: Subscription,
        task_key: int,
        after: int,
        turn_id: str | None,
        idle_timeout: float,
        *,
        read_first: bool = False,
    ) -> AsyncIterator[Event | None]:
        """`follow`'s loop, woken by `wakeup` (subscribed to the task's topic); without
        `read_first`, it waits for a change before its first read."""
        database, topic = self._store.database, task_topic(task_key)
        idle_since, said_at = time.monotonic(), -math.inf
        woken = read_first
        while True:
            if time.monotonic() - said_at >= WATCH_SECONDS:
                await database.say_watching(topic)
                said_at = time.monotonic()
            if woken:
                events, last = await self._store.events.news(task_key, after, turn_id)
                for event in events:
                    after = event.seq
                    if turn_id is None or event.turn_id == turn_id:
                        idle_since = time.monotonic()
                        yield event
                if last:
                    return
                if events:
                    continue
            if time.monotonic() - idle_since >= idle_timeout:
                idle_since = time.monotonic()
                yield None
            await wakeup.wait(POLL_SECONDS)
            woken = True  # or the poll's time came: a wake-up is a hint, never the only way

    async def state(
        self, principal: Principal, worker_id: str, *, task_id: str | None = None
    ) -> WorkerState:
        """The worker with its latest task (or the given one) and that task's latest turn."""
        worker = await self._workers.visible(principal, worker_id)
        if task_id is not None:
            task = await self._store.tasks.get(principal.organization_id, task_id)
            if task is None or task.worker_id != worker.id:
                raise NotFoundError(f"task {task_id} not found for worker {worker_id}")
        else:
            task = await self._store.tasks.latest_for_worker(principal.organization_id, worker.id)
        if task is None:
            return WorkerState(worker, None, None)
        return await self.state_of_task(worker, task.key)

    async def state_of_task(
        self, worker: Worker, task_key: int, turn_id: str | None = None
    ) -> WorkerState:
        snapshot = await self._store.tasks.snapshot(task_key)
        turns = snapshot.turns
        turn = next((t for t in turns if t.id == turn_id), None) if turn_id else None
        return WorkerState(worker, snapshot, turn or (turns[-1] if turns else None))

    async def task_with_turns(self, principal: Principal, task_id: str) -> TaskSnapshot:
        task = await self.visible_task(principal, task_id)
        return await self._store.tasks.snapshot(task.key)

    async def visible_task(self, principal: Principal, task_id: str) -> Task:
        """The task if the caller may see its worker; otherwise not found (spec §16.17)."""
        task = await self._store.tasks.get(principal.organization_id, task_id)
        if task is None:
            raise NotFoundError(f"task {task_id} not found")
        try:
            await self._workers.visible(principal, task.worker_id)
        except NotFoundError:
            raise NotFoundError(f"task {task_id} not found") from None
        return task

    async def archive(self, principal: Principal, task_id: str) -> None:
        """Archive (spec §3.12): only the worker's creator may; the task stays readable by id."""
        task = await self.visible_task(principal, task_id)
        await self._workers.owned(principal, task.worker_id)
        await self._store.tasks.archive(task.key, self._clock.now())

    async def list(
        self,
        principal: Principal,
        *,
        worker_id: str | None,
        status: TaskStatus | None,
        page: int,
        page_size: int,
        triggered_by: TriggeredBy | None = None,
    ) -> Page[Task]:
        items, total = await self._store.tasks.list_visible(
            principal.organization_id,
            principal.user_id,
            worker_id=worker_id,
            status=status,
            offset=(page - 1) * page_size,
            limit=page_size,
            triggered_by=triggered_by,
        )
        return Page.of(items, page=page, page_size=page_size, total=total)


async def _submitted_and(
    news: AsyncGenerator[Submitted | T],
) -> tuple[Submitted, AsyncGenerator[T]]:
    """A generator's first item, the submitted turn, and the generator for the rest."""
    submitted = await anext(news)
    assert isinstance(submitted, Submitted)  # the generator's first item, by its contract
    return submitted, cast(AsyncGenerator[T], news)


def provisional_title(text: str) -> str:
    """The task's title until the model has written one: its input on one line, shortened."""
    line = " ".join(text.split())
    if len(line) <= PROVISIONAL_TITLE_LENGTH:
        return line
    return line[: PROVISIONAL_TITLE_LENGTH - 1].rstrip() + "…"


def is_own_title(text: str) -> bool:
    """A short one-line input is the best title of its task; the model only summarises longer
    ones (which saves a model request per task)."""
    return "\n" not in text.strip() and len(" ".join(text.split())) <= PROVISIONAL_TITLE_LENGTH
