"""Workspace files: upload, download (as attachments, with the session) and delete."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, RedirectResponse

from kennel.dashboard.deps import DashboardDep, PostedDep, SessionDep
from kennel.dashboard.routing import DashboardRoute
from kennel.errors import InvalidInputError, NotFoundError

router = APIRouter(route_class=DashboardRoute)

# Whatever a file holds, the browser saves it and never renders it in the dashboard's origin.
DOWNLOAD_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


@router.post("/worker/{worker_id}/files")
async def upload_files(worker_id: str, posted: PostedDep, app: DashboardDep) -> Response:
    if not posted.uploads:
        raise InvalidInputError("choose at least one file")
    await app.workers.upload(posted.principal, worker_id, posted.uploads)
    return RedirectResponse(f"/worker/{worker_id}#files", status_code=303)


@router.post("/worker/{worker_id}/files/delete")
async def delete_file(worker_id: str, posted: PostedDep, app: DashboardDep) -> Response:
    await app.workers.delete_file(posted.principal, worker_id, posted.text("path"))
    return RedirectResponse(f"/worker/{worker_id}#files", status_code=303)


@router.get("/worker/{worker_id}/files/{path:path}")
async def download_file(
    worker_id: str, path: str, session: SessionDep, app: DashboardDep
) -> Response:
    found = await app.workers.file(session.principal, worker_id, path)
    if not found.location.is_file():
        raise NotFoundError(f"file {path} is no longer in the workspace")
    return FileResponse(
        found.location,
        media_type=found.file.media_type,
        filename=found.location.name,
        content_disposition_type="attachment",
        headers=DOWNLOAD_HEADERS,
    )
