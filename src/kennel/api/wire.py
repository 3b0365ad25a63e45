"""Domain records → Handinger wire objects (spec §4). The `Worker` object is snake_case at the
top level; everything else is camelCase."""

from __future__ import annotations

from typing import Any

from kennel.clock import iso
from kennel.files.workspace import download_url
from kennel.models import Page, Source, Task, TaskStatus, Turn, Worker, WorkspaceFile
from kennel.services.tasks import WorkerState

JSON = dict[str, Any]


class Wire:
    """Builds wire objects; knows the public base URL that links point at."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")

    def worker_url(self, worker_id: str) -> str:
        return f"{self._base}/worker/{worker_id}"

    def file_url(self, worker_id: str, path: str) -> str:
        return download_url(self._base, worker_id, path)

    def template(self, worker: Worker) -> JSON:
        return {
            "id": worker.id,
            "createdAt": iso(worker.created_at),
            "instructions": worker.instructions,
            "organizationId": worker.organization_id,
            "outputSchema": worker.output_schema,
            "summary": worker.summary,
            "title": worker.title,
            "updatedAt": iso(worker.updated_at),
            "url": self.worker_url(worker.id),
            "userId": worker.user_id,
            "visibility": worker.visibility.value,
            "model": worker.model,
            "emailAllowList": list(worker.email_allow_list),
        }

    def task(self, task: Task) -> JSON:
        return {
            "id": task.id,
            "completedAt": iso(task.completed_at) if task.completed_at else None,
            "createdAt": iso(task.created_at),
            "createdByUserId": task.created_by_user_id,
            "organizationId": task.organization_id,
            "status": task.status.value,
            "title": task.title,
            "totals": {
                "credits": task.totals.credits,
                "durationMs": task.totals.duration_ms,
                "turnCount": task.totals.turn_count,
            },
            "triggeredBy": task.triggered_by.value,
            "url": f"{self.worker_url(task.worker_id)}/task/{task.id}",
            "workerId": task.worker_id,
            "archived": task.archived_at is not None,
        }

    def turn(self, turn: Turn, task_id: str) -> JSON:
        return {
            "id": turn.id,
            "completedAt": iso(turn.completed_at) if turn.completed_at else None,
            "credits": turn.usage.credits,
            "durationMs": turn.duration_ms,
            "input": turn.input,
            "inputTokens": turn.usage.input_tokens,
            "outputText": turn.output_text,
            "outputTokens": turn.usage.output_tokens,
            "role": "user",
            "seq": turn.seq,
            "startedAt": iso(turn.started_at or turn.created_at),
            "status": turn.status.value,
            "structuredOutput": turn.structured_output,
            "taskId": task_id,
            "budget": turn.budget.value,
        }

    def file(self, worker_id: str, file: WorkspaceFile) -> JSON:
        return {
            "filename": file.path,
            "mediaType": file.media_type,
            "url": self.file_url(worker_id, file.path),
            "size": file.size,
        }

    def worker(self, state: WorkerState) -> JSON:
        """The `Worker` object (spec §4.1): one run of one task, shaped like an OpenAI response."""
        worker, snapshot, turn = state.worker, state.snapshot, state.turn
        body: JSON = {
            "id": worker.id,
            "object": "worker",
            "created_at": None,
            "status": "pending",
            "running": False,
            "error": None,
            "incomplete_details": None,
            "output_text": "",
            "output": [],
            "structured_output": None,
            "sources": [],
            "files": [],
            "messages": [],
            "metadata": {},
            "url": self.worker_url(worker.id),
        }
        if snapshot is None or turn is None:
            return body
        task = snapshot.task
        body.update(
            created_at=int(task.created_at.timestamp()),
            status=_run_status(turn.status),
            running=not turn.status.is_terminal,
            output_text=turn.output_text,
            output=_output(turn),
            structured_output=turn.structured_output,
            sources=[_source(source) for source in snapshot.sources],
            files=[self.file(worker.id, file) for file in snapshot.files],
            messages=[message for t in snapshot.turns for message in self.messages(worker.id, t)],
            metadata=_metadata(task, turn),
            usage={"credits": turn.usage.credits, "durationMs": turn.duration_ms},
        )
        return body

    def messages(self, worker_id: str, turn: Turn) -> list[JSON]:
        """The turn as AI SDK `UIMessage`s: the user's input, then the assistant's answer.

        Files handed in with the turn are `file` parts of the user's message, before its text,
        as the AI SDK's `sendMessage` puts them.
        """
        files: list[JSON] = [
            {
                "type": "file",
                "mediaType": file.media_type,
                "filename": file.path,
                "url": self.file_url(worker_id, file.path),
            }
            for file in turn.attachments
        ]
        user = {
            "id": f"{turn.id}-input",
            "role": "user",
            "parts": [*files, {"type": "text", "text": turn.input}],
        }
        return [user] if turn.ui_message is None else [user, turn.ui_message]

    def page(self, page: Page[Any], items: list[JSON]) -> JSON:
        return {
            "data": items,
            "page": page.page,
            "pageCount": page.page_count,
            "totalCount": page.total_count,
        }


def _source(source: Source) -> JSON:
    return {"id": source.id, "type": "url", "url": source.url, "title": source.title}


def _run_status(status: TaskStatus) -> str:
    if status is TaskStatus.PENDING:
        return "pending"
    if status is TaskStatus.RUNNING:
        return "running"
    return "completed"


def _output(turn: Turn) -> list[JSON]:
    if not turn.status.is_terminal or not turn.output_text:
        return []
    return [
        {
            "id": f"msg_{turn.id}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": turn.output_text}],
        }
    ]


def _metadata(task: Task, turn: Turn) -> JSON:
    metadata: JSON = dict(task.metadata)
    metadata.update(
        taskId=task.id,
        turnId=turn.id,
        taskTitle=task.title,
        budget=turn.budget.value,
        triggeredBy=task.triggered_by.value,
    )
    if turn.incomplete_reason:
        metadata["incompleteReason"] = turn.incomplete_reason
    if turn.error:
        metadata["error"] = {"code": turn.error.code, "message": turn.error.message}
    return metadata
