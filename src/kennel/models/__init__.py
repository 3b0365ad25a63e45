"""Domain records: plain frozen dataclasses and enums, no I/O.

Records of the queue are in `models.jobs`, of e-mail in `models.mail`, of webhooks in
`models.webhooks`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from kennel.models.jobs import Claimant, Job
from kennel.models.mail import InboundEmail

JSONObject = dict[str, Any]
T = TypeVar("T")


class Budget(StrEnum):
    LOW = "low"
    STANDARD = "standard"
    HIGH = "high"
    UNLIMITED = "unlimited"


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


class TaskStatus(StrEnum):
    """Status of a task and of each of its turns (spec §4.3)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    ABORTED = "aborted"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.ERROR, TaskStatus.ABORTED)


CANCELLED = "cancelled"
"""`incompleteReason` of a turn stopped by `POST /api/tasks/{taskId}/cancel`."""


class TriggeredBy(StrEnum):
    API = "api"
    EMAIL = "email"
    SCHEDULE = "schedule"
    UI = "ui"


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    name: str
    credit_balance: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    id: str
    organization_id: str
    email: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the API key's user in its organization."""

    organization_id: str
    user_id: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Session:
    """A dashboard sign-in: the caller behind it and the token its forms must carry."""

    principal: Principal
    csrf_token: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as its owner and operators see it: its prefix, never the key itself."""

    id: str
    prefix: str
    organization_id: str
    organization_name: str
    user_id: str
    user_email: str
    created_at: datetime
    last_used_at: datetime | None
    """Recorded at most about once a minute, so up to a minute behind the last request."""
    revoked_at: datetime | None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Member:
    """A user of an organization, with their active keys and the last use of any of them."""

    user: User
    active_keys: int
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """What one worker used on one day (UTC): its finished turns, their tokens and credits.

    `worker_id` and `worker_title` are None in a report per organization, and on the line that
    adds up the private workers of other users in a report shown to one user."""

    day: date
    organization_id: str
    organization_name: str
    worker_id: str | None
    worker_title: str | None
    turns: int
    input_tokens: int
    output_tokens: int
    credits: int


@dataclass(frozen=True, slots=True)
class Worker:
    id: str
    organization_id: str
    user_id: str
    title: str
    instructions: str
    summary: str
    output_schema: JSONObject | None
    visibility: Visibility
    model: str | None
    created_at: datetime
    updated_at: datetime
    email_allow_list: tuple[str, ...] = ()
    """Addresses outside the organization that may start tasks by e-mail (lower case)."""

    def is_visible_to(self, principal: Principal) -> bool:
        return self.organization_id == principal.organization_id and (
            self.visibility is Visibility.PUBLIC or self.user_id == principal.user_id
        )


@dataclass(frozen=True, slots=True)
class WorkerOverview:
    """A worker as the workers page lists it: with how much it has been used."""

    worker: Worker
    task_count: int
    """Its tasks that are not archived."""
    credits: int
    """Credits of all its tasks, archived ones included: they were spent."""
    last_run_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskTotals:
    credits: int = 0
    duration_ms: int = 0
    turn_count: int = 0


@dataclass(frozen=True, slots=True)
class Task:
    key: int
    """Internal primary key; public ids are unique per organization only (spec §16.10)."""
    id: str
    organization_id: str
    worker_id: str
    title: str
    status: TaskStatus
    triggered_by: TriggeredBy
    created_by_user_id: str | None
    created_at: datetime
    completed_at: datetime | None
    archived_at: datetime | None
    metadata: JSONObject
    totals: TaskTotals = field(default_factory=TaskTotals)


@dataclass(frozen=True, slots=True)
class TurnError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage of one turn: tokens and tool calls of every model request, billed as credits."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    tool_calls: int = 0
    credits: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Turn:
    id: str
    task_key: int
    seq: int
    input: str
    budget: Budget
    status: TaskStatus
    output_text: str
    structured_output: JSONObject | None
    usage: Usage
    duration_ms: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: TurnError | None
    incomplete_reason: str | None
    first_event_seq: int | None
    """Sequence number of this turn's first event in the task's log, once it started."""
    ui_message: JSONObject | None
    """The assistant's AI SDK `UIMessage` for this turn, stored when the turn ends."""
    attempts: int
    live: bool = False
    """Its caller follows it as a stream, so its model requests are streamed token by token."""
    attachments: tuple[AttachedFile, ...] = ()
    """The files handed in with the turn (API uploads, e-mail attachments), as submitted."""


@dataclass(frozen=True, slots=True)
class AttachedFile:
    """A file handed in with a turn, as it was stored in the worker's workspace; the model is
    told about it, and `Worker.messages` shows it on the user's message."""

    path: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Event:
    """One AI SDK UI-message-stream chunk in a task's event log, already JSON-encoded."""

    seq: int
    turn_id: str
    body: str


@dataclass(frozen=True, slots=True)
class WorkspaceFile:
    path: str
    size: int
    media_type: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Source:
    """A page a worker fetched (spec §16.4); its id is the same in every turn of a task."""

    id: str
    url: str
    title: str | None


@dataclass(frozen=True, slots=True)
class TurnStep:
    """One finished step of a turn (a model response and the tool calls it asked for), kept so
    that a run taking the turn over after a crash goes on from there."""

    step: int
    messages: bytes
    """The model messages the step added (pydantic-ai JSON)."""
    state: JSONObject
    """The run's counters and what its tools had done, after the step."""


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What a runner needs to run one turn: the worker, the task, the turn and its history;
    and, for a turn taken over, its finished steps and the chunks its stream already holds."""

    worker: Worker
    task: Task
    turn: Turn
    history: list[bytes]
    """The model messages of each earlier completed turn, as stored (pydantic-ai JSON)."""
    steps: list[TurnStep] = field(default_factory=list)
    told: list[str] = field(default_factory=list)
    """The turn's chunks already in the task's event log, in order (encoded)."""


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """How a run ended: everything `finish_turn` records in one transaction."""

    status: TaskStatus
    output_text: str = ""
    structured_output: JSONObject | None = None
    usage: Usage = field(default_factory=Usage)
    duration_ms: int = 0
    error: TurnError | None = None
    incomplete_reason: str | None = None
    model_messages: bytes | None = None
    ui_message: JSONObject | None = None
    sources: tuple[Source, ...] = ()
    files: tuple[WorkspaceFile, ...] = ()
    """Workspace files the turn created or changed (and that still exist)."""
    deleted_files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Submission:
    """A new turn to store: on an existing task, or on a new one (and maybe a new worker)."""

    organization_id: str
    task_id: str
    worker: Worker
    input: str
    budget: Budget
    triggered_by: TriggeredBy
    created_by_user_id: str | None
    provisional_title: str
    metadata: JSONObject
    turn_id: str
    max_attempts: int
    create_worker: bool = False
    files: tuple[WorkspaceFile, ...] = ()
    live: bool = False
    email: InboundEmail | None = None
    """The mail that asked for this turn; its reply is queued when the turn ends."""
    claimant: Claimant | None = None
    """This process's runner, when it has a slot free to start the turn as it is stored."""


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """A submission as stored: its task (as found, or as created) and turn, the task's last
    event sequence number before the turn, and the turn's job when its claimant took it."""

    task: Task
    turn: Turn
    events_after: int
    job: Job | None


@dataclass(frozen=True, slots=True)
class BudgetCaps:
    """What one turn may spend (spec §16.8); None means no cap of that kind."""

    requests: int | None
    tool_calls: int | None
    tokens: int | None


BUDGET_CAPS: dict[Budget, BudgetCaps] = {
    Budget.LOW: BudgetCaps(requests=4, tool_calls=2, tokens=30_000),
    Budget.STANDARD: BudgetCaps(requests=12, tool_calls=10, tokens=150_000),
    Budget.HIGH: BudgetCaps(requests=50, tool_calls=60, tokens=1_000_000),
    Budget.UNLIMITED: BudgetCaps(requests=None, tool_calls=None, tokens=None),
}


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    page_count: int
    total_count: int

    @classmethod
    def of(cls, items: list[T], *, page: int, page_size: int, total: int) -> Page[T]:
        """One page of a listing; an empty listing still has one (empty) page."""
        return cls(items, page, max(1, math.ceil(total / page_size)), total)


class ScheduleKind(StrEnum):
    """The `type` of a schedule's `when` (spec §3.6)."""

    SCHEDULED = "scheduled"
    DELAYED = "delayed"
    CRON = "cron"
    INTERVAL = "interval"

    @property
    def is_one_shot(self) -> bool:
        return self in (ScheduleKind.SCHEDULED, ScheduleKind.DELAYED)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule of a worker; `next_run_at` is None once a one-shot has fired."""

    id: str
    worker_id: str
    organization_id: str
    input: str
    budget: Budget
    kind: ScheduleKind
    delay_seconds: int | None
    interval_seconds: int | None
    cron: str | None
    timezone: str | None
    """IANA name the cron expression is read in; None means UTC."""
    run_at: datetime | None
    """The instant a one-shot (`scheduled`, `delayed`) is due; None for recurring kinds."""
    next_run_at: datetime | None
    created_by_user_id: str
    created_at: datetime
    cancelled_at: datetime | None = None
    last_fired_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.cancelled_at is None and self.next_run_at is not None


@dataclass(frozen=True, slots=True)
class FiringFacts:
    """What a schedule's firing decides on, read in the firing's transaction."""

    last_task_status: TaskStatus | None
    """The status of the task its last firing started, if any."""
    credit_balance: int | None
    """Its organization's balance (None: unlimited)."""


@dataclass(frozen=True, slots=True)
class ScheduleFiring:
    """What one firing of a schedule does: the turn it submits (unless `skip_reason` says why
    not) and when the schedule is due next (None: it never fires again)."""

    submission: Submission
    next_run_at: datetime | None
    skip_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One firing of a schedule: the task it started, or why it was skipped."""

    id: str
    schedule_id: str
    worker_id: str
    task_id: str | None
    task_status: TaskStatus | None
    """The started task's status now; None for a skipped firing."""
    scheduled_for: datetime
    fired_at: datetime
    manual: bool
    """Started by `run-now` rather than by the clock."""
    skip_reason: str | None = None


TASK_EVENT_TYPES = {
    TaskStatus.COMPLETED: "task.completed",
    TaskStatus.ERROR: "task.failed",
    TaskStatus.ABORTED: "task.aborted",
}
"""The webhook event `type` of each terminal task status (spec §16.5)."""


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """A task with all its turns and files, read in one consistent transaction."""

    task: Task
    turns: list[Turn]
    files: list[WorkspaceFile]
    event_seq: int
    sources: list[Source] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SubmissionContext:
    """What deciding on a new turn needs, read in one transaction."""

    credit_balance: int | None
    task: Task | None
    worker: Worker | None
    """The existing task's worker, else the requested one; None if missing or deleted."""


@dataclass(frozen=True, slots=True)
class CancelledTurns:
    """What cancelling a task did to its unfinished turns."""

    running: list[str]
    """Turns that were running: their runs were told to stop."""
    aborted: list[str]
    """Turns that had not started: they ended `aborted` at once."""
