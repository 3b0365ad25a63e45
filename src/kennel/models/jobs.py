"""Records of the queue: jobs of every kind, as claimed, as found expired, as a turn's run
holds one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job of the queue is: queued -> running (leased) -> done | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TURN_JOB = "turn"
WEBHOOK_JOB = "webhook"
MAIL_JOB = "mail"


@dataclass(frozen=True, slots=True)
class DeliveryAttempts:
    """How many attempts the deliveries a turn's end queues get: its webhook event
    (`KENNEL_WEBHOOK_MAX_ATTEMPTS`) and its e-mail reply (`KENNEL_SMTP_MAX_ATTEMPTS`)."""

    webhook: int = 8
    mail: int = 8


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job of any kind: `ref` names the row it works on (a turn, a webhook delivery,
    a queued mail); `lease_token` fences every write of the attempt that holds it."""

    job_id: int
    kind: str
    ref: str
    lease_token: str
    attempts: int
    """This attempt's number, from 1."""
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Claimant:
    """A runner with a free slot, taking a job as it is stored: the job is stored claimed, as
    a claim would leave it, and the runner starts it without a claim or a wake-up."""

    owner: str
    lease: timedelta


@dataclass(frozen=True, slots=True)
class ExpiredJob:
    """A running job whose runner is gone, with what recovery decides on."""

    job_id: int
    kind: str
    ref: str
    attempts: int
    max_attempts: int
    lease_token: str | None = None
    """The lost claim's token: settling fences on it, so a job claimed again is left alone."""
    strikes: int = 0
    interruptions: int = 0
    progressed: bool = False
    """The lost attempt finished a step: the turn was moving."""
    others_finished: bool = False
    """Other jobs finished while the lost attempt ran: the process was not stuck as a whole."""

    def claim(self) -> Job:
        """The lost attempt's claim, to settle the job in its place."""
        token = self.lease_token or ""
        return Job(self.job_id, self.kind, self.ref, token, self.attempts, self.max_attempts)


@dataclass(frozen=True, slots=True)
class TurnJob:
    """A claimed turn job and its task: the run's handle, fencing every write it makes."""

    job: Job
    task_key: int

    @property
    def turn_id(self) -> str:
        return self.job.ref

    @property
    def attempts(self) -> int:
        return self.job.attempts
