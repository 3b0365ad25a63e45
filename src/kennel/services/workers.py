"""Workers: templates with instructions, an optional output schema and visibility rules."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kennel import ids
from kennel.agent import outputschema
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime
from kennel.clock import Clock
from kennel.config import Settings
from kennel.errors import InvalidInputError, KennelError, NotFoundError, PermissionDeniedError
from kennel.files.workspace import Upload, Workspaces, safe_relative_path
from kennel.models import (
    JSONObject,
    Page,
    Principal,
    Visibility,
    Worker,
    WorkerOverview,
    WorkspaceFile,
)
from kennel.services.billing import credits_for
from kennel.services.dognames import dog_name
from kennel.storage import Store

logger = logging.getLogger(__name__)

SUMMARY_MAX_LENGTH = 80
ALLOW_LIST_MAX_LENGTH = 100


@dataclass(frozen=True, slots=True)
class WorkerDraft:
    """A new worker as the caller described it; missing parts are filled in by `create`."""

    instructions: str | None = None
    output_schema: JSONObject | None = None
    prompt: str | None = None
    summary: str | None = None
    title: str | None = None
    visibility: Visibility = Visibility.PUBLIC
    model: str | None = None
    email_allow_list: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FoundFile:
    file: WorkspaceFile
    location: Path


class WorkerService:
    def __init__(
        self,
        store: Store,
        workspaces: Workspaces,
        catalog: ModelCatalog,
        clock: Clock,
        settings: Settings,
        runtime: AgentRuntime,
    ) -> None:
        self._store = store
        self._workspaces = workspaces
        self._catalog = catalog
        self._runtime = runtime
        self._clock = clock
        self._settings = settings

    def new_worker(self, principal: Principal, draft: WorkerDraft) -> Worker:
        """A worker record built from a draft (not stored yet)."""
        if draft.output_schema is not None:
            check_output_schema(draft.output_schema)
        now = self._clock.now()
        instructions = draft.instructions if draft.instructions is not None else draft.prompt
        return Worker(
            id=ids.worker_id(),
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            title=draft.title or dog_name(),
            instructions=instructions or "",
            summary=(
                draft.summary
                if draft.summary is not None
                else summarize(draft.prompt or instructions)
            ),
            output_schema=draft.output_schema,
            visibility=draft.visibility,
            model=draft.model,
            created_at=now,
            updated_at=now,
            email_allow_list=email_allow_list(draft.email_allow_list),
        )

    async def create(self, principal: Principal, draft: WorkerDraft) -> Worker:
        """Store a new worker. Described by a `prompt` alone, it gets instructions (and a
        summary, and an output schema when the prompt asks for fields) written by its model;
        without a usable model the prompt itself is its instructions."""
        if draft.model is not None:
            await self._catalog.check(draft.model)
        if draft.prompt and draft.instructions is None:
            draft = await self._designed(principal, draft, draft.prompt)
        worker = self.new_worker(principal, draft)
        await self._store.workers.create(worker)
        return worker

    async def _designed(self, principal: Principal, draft: WorkerDraft, prompt: str) -> WorkerDraft:
        try:
            model_name = self._catalog.name_for(draft.model)
        except KennelError:
            return draft
        design, usage = await self._runtime.design_worker(model_name, prompt)
        credits = credits_for(usage, model_name, self._settings.model_prices)
        if credits:
            await self._store.billing.debit(principal.organization_id, credits)
        if design is None:
            return draft
        schema = draft.output_schema
        if schema is None and design.output_schema:
            try:
                check_output_schema(design.output_schema)
                schema = design.output_schema
            except InvalidInputError:
                logger.warning("the model wrote an invalid output schema; the worker has none")
        summary = draft.summary if draft.summary is not None else design.summary
        return replace(
            draft,
            instructions=design.instructions,
            summary=_shortened(summary),
            output_schema=schema,
        )

    async def visible(self, principal: Principal, worker_id: str) -> Worker:
        """The worker if the caller may see it; others' and deleted workers are not found."""
        worker = await self._store.workers.get(principal.organization_id, worker_id)
        if worker is None or not worker.is_visible_to(principal):
            raise NotFoundError(f"worker {worker_id} not found")
        return worker

    async def owned(self, principal: Principal, worker_id: str) -> Worker:
        """The worker if the caller created it (spec §10: creator-only operations)."""
        worker = await self.visible(principal, worker_id)
        if worker.user_id != principal.user_id:
            raise PermissionDeniedError(f"only the creator of worker {worker_id} may do this")
        return worker

    async def update(self, principal: Principal, worker_id: str, changes: dict[str, Any]) -> Worker:
        """Change only the given fields; `output_schema: None` goes back to free-form text."""
        await self.owned(principal, worker_id)
        if changes.get("output_schema") is not None:
            check_output_schema(changes["output_schema"])
        if changes.get("model") is not None:
            await self._catalog.check(changes["model"])
        if "email_allow_list" in changes:
            changes = {**changes, "email_allow_list": email_allow_list(changes["email_allow_list"])}
        if not changes:
            return await self.visible(principal, worker_id)
        updated = await self._store.workers.update(
            principal.organization_id, worker_id, changes, self._clock.now()
        )
        if updated is None:
            raise NotFoundError(f"worker {worker_id} not found")
        return updated

    async def delete(self, principal: Principal, worker_id: str) -> None:
        await self.owned(principal, worker_id)
        await self._store.workers.delete(principal.organization_id, worker_id, self._clock.now())

    async def list(self, principal: Principal, page: int, page_size: int) -> Page[Worker]:
        items, total = await self._store.workers.list_visible(
            principal.organization_id,
            principal.user_id,
            offset=(page - 1) * page_size,
            limit=page_size,
        )
        return Page.of(items, page=page, page_size=page_size, total=total)

    async def overview(
        self, principal: Principal, search: str, page: int, page_size: int
    ) -> Page[WorkerOverview]:
        """The workers the caller sees, with their use, optionally only those whose title or
        summary contains `search`."""
        items, total = await self._store.workers.overview(
            principal.organization_id,
            principal.user_id,
            search=search.strip()[:200],
            offset=(page - 1) * page_size,
            limit=page_size,
        )
        return Page.of(items, page=page, page_size=page_size, total=total)

    async def file(self, principal: Principal, worker_id: str, path: str) -> FoundFile:
        """A file of the worker's workspace that Kennel knows of (uploaded or written by it)."""
        worker = await self.visible(principal, worker_id)
        location = self._workspaces.resolve(worker.organization_id, worker.id, path)
        record = await self._store.files.get(worker.id, safe_relative_path(path))
        if record is None:
            raise NotFoundError(f"file {path} not found")
        return FoundFile(record, location)

    async def files(
        self, principal: Principal, worker_id: str, page: int, page_size: int
    ) -> Page[WorkspaceFile]:
        """The files of the worker's workspace that Kennel knows of, by path."""
        worker = await self.visible(principal, worker_id)
        items, total = await self._store.files.list(
            worker.id, offset=(page - 1) * page_size, limit=page_size
        )
        return Page.of(items, page=page, page_size=page_size, total=total)

    async def upload(
        self, principal: Principal, worker_id: str, uploads: Sequence[Upload]
    ) -> Sequence[WorkspaceFile]:
        """Put files in the workspace, outside any task; whoever may run the worker may."""
        worker = await self.visible(principal, worker_id)
        saved = [
            await self._workspaces.save(worker.organization_id, worker.id, upload)
            for upload in uploads
        ]
        await self._store.files.record(worker.id, saved)
        return saved

    async def delete_file(self, principal: Principal, worker_id: str, path: str) -> None:
        """Remove a workspace file: its creator's decision, like deleting the worker."""
        worker = await self.owned(principal, worker_id)
        path = safe_relative_path(path)
        await self._workspaces.delete(worker.organization_id, worker.id, path)
        await self._store.files.forget(worker.id, [path])

    async def email_address(self, principal: Principal, worker_id: str) -> str:
        worker = await self.visible(principal, worker_id)
        return f"{worker.id}@{self._settings.email_domain}"


def check_output_schema(schema: JSONObject) -> None:
    """Output schemas are Draft-07 JSON Schemas describing an object (structured output is one),
    whose references resolve inside the schema: no URL is ever fetched for one."""
    problem = outputschema.problem_of(schema)
    if problem is not None:
        raise InvalidInputError(f"outputSchema {problem}")


def email_allow_list(entries: Sequence[str]) -> tuple[str, ...]:
    """Senders outside the organization who may e-mail the worker: addresses, or `@domain` for
    a whole domain; lower case, without repeats."""
    if len(entries) > ALLOW_LIST_MAX_LENGTH:
        raise InvalidInputError(f"emailAllowList holds at most {ALLOW_LIST_MAX_LENGTH} entries")
    found: dict[str, None] = {}
    for entry in entries:
        address = entry.strip().lower()
        local, at, domain = address.rpartition("@")
        if not at or not domain or "." not in domain or len(address) > 320 or " " in address:
            raise InvalidInputError(f"emailAllowList: {entry!r} is neither an address nor @domain")
        found[address if local else f"@{domain}"] = None
    return tuple(found)


def summarize(text: str | None) -> str:
    """A one-line summary from a description: its first sentence, cut to 80 characters."""
    if not text:
        return ""
    line = " ".join(text.split())
    return _shortened(line.split(". ", 1)[0].rstrip("."))


def _shortened(line: str) -> str:
    line = " ".join(line.split())
    if len(line) <= SUMMARY_MAX_LENGTH:
        return line
    return line[: SUMMARY_MAX_LENGTH - 1].rstrip() + "…"
