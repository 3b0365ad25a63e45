"""Multipart bodies (spec §5, §16.15): text parts are fields, any file part is an upload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message

from kennel.config import Settings
from kennel.errors import PayloadTooLargeError
from kennel.files.workspace import Upload

MAX_FIELD_BYTES = 1024 * 1024
MAX_PARTS = 1000


@asynccontextmanager
async def read_multipart(
    request: Request, settings: Settings
) -> AsyncIterator[tuple[dict[str, Any], list[Upload]]]:
    """Text parts as fields, file parts as uploads, for as long as the block lasts (then the
    spooled files are closed); refuses bodies over the configured limits."""
    limit = settings.max_upload_request_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the request is larger than {limit} bytes")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLargeError(f"the request is larger than {limit} bytes")
        return message

    limited = Request(request.scope, receive)
    form = await limited.form(
        max_files=MAX_PARTS, max_fields=MAX_PARTS, max_part_size=MAX_FIELD_BYTES
    )
    try:
        yield _split(form, settings)
    finally:
        await form.close()


def _split(form: FormData, settings: Settings) -> tuple[dict[str, Any], list[Upload]]:
    fields: dict[str, Any] = {}
    uploads: list[Upload] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if value.size is not None and value.size > settings.max_upload_file_bytes:
                raise PayloadTooLargeError(
                    f"file {value.filename!r} is larger than {settings.max_upload_file_bytes} bytes"
                )
            uploads.append(Upload(value.filename or name, value.content_type, value.file))
        else:
            fields[name] = value
    return fields, uploads
