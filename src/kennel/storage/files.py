"""Workspace file records: which files a worker has and which ones each task touched."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kennel.models import WorkspaceFile
from kennel.storage.database import Database
from kennel.storage.statements import Prebuilt, upsert
from kennel.storage.tables import task_files, workspace_files


class FileStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, worker_id: str, path: str) -> WorkspaceFile | None:
        query = sa.select(workspace_files).where(
            workspace_files.c.worker_id == worker_id, workspace_files.c.path == path
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else _file(row)

    async def list(
        self, worker_id: str, *, offset: int, limit: int
    ) -> tuple[list[WorkspaceFile], int]:
        """The worker's files by path, with the total count."""
        of_worker = workspace_files.c.worker_id == worker_id

        def work(conn: sa.Connection) -> tuple[list[WorkspaceFile], int]:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(workspace_files).where(of_worker)
            ).scalar_one()
            rows = conn.execute(
                sa.select(workspace_files)
                .where(of_worker)
                .order_by(workspace_files.c.path)
                .offset(offset)
                .limit(limit)
            )
            return [_file(row) for row in rows], int(total)

        return await self._db.read(work)

    async def record(self, worker_id: str, files: Sequence[WorkspaceFile]) -> None:
        """Files put in the workspace outside any task (uploaded on the dashboard)."""
        if files:
            rows = [_row(worker_id, file) for file in files]
            await self._db.write(
                lambda conn: _upsert(
                    conn,
                    workspace_files,
                    rows,
                    keys=("worker_id", "path"),
                    updates=("size", "media_type", "updated_at"),
                )
            )

    async def forget(self, worker_id: str, paths: Sequence[str]) -> None:
        await self._db.write(lambda conn: forget_files(conn, worker_id, paths))


def record_task_files(
    conn: sa.Connection,
    worker_id: str,
    task_key: int,
    files: Sequence[WorkspaceFile],
    now: datetime,
) -> None:
    """Upsert the workspace records and mark each file as touched by the task."""
    if not files:
        return
    _upsert(
        conn,
        workspace_files,
        [_row(worker_id, file) for file in files],
        keys=("worker_id", "path"),
        updates=("size", "media_type", "updated_at"),
    )
    _upsert(
        conn,
        task_files,
        [
            {"task_key": task_key, "path": file.path, "worker_id": worker_id, "created_at": now}
            for file in files
        ],
        keys=("task_key", "path"),
        updates=(),
    )


def forget_files(conn: sa.Connection, worker_id: str, paths: Sequence[str]) -> None:
    """Drop the records of files deleted from the workspace, for every task that touched them."""
    if not paths:
        return
    for table in (task_files, workspace_files):
        conn.execute(table.delete().where(table.c.worker_id == worker_id, table.c.path.in_(paths)))


_FILES_OF_TASK = Prebuilt(
    sa.select(workspace_files)
    .join(
        task_files,
        sa.and_(
            task_files.c.worker_id == workspace_files.c.worker_id,
            task_files.c.path == workspace_files.c.path,
        ),
    )
    .where(task_files.c.task_key == sa.bindparam("task_key"))
    .order_by(task_files.c.created_at, workspace_files.c.path)
)


def task_files_of(conn: sa.Connection, task_key: int) -> list[WorkspaceFile]:
    rows = _FILES_OF_TASK.rows(conn, {"task_key": task_key})
    return [_file(row) for row in rows]


def _upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    *,
    keys: Iterable[str],
    updates: Iterable[str],
) -> None:
    statement = upsert(conn, table).values(rows)
    columns = list(updates)
    if columns:
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: statement.excluded[name] for name in columns},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(statement)


def _row(worker_id: str, file: WorkspaceFile) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "path": file.path,
        "size": file.size,
        "media_type": file.media_type,
        "updated_at": file.updated_at,
    }


def _file(row: Any) -> WorkspaceFile:
    return WorkspaceFile(row.path, row.size, row.media_type, row.updated_at)
