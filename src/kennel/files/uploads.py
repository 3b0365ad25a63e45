"""Multipart bodies (spec §5, §16.15): text parts are fields, any file part is an upload."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from kennel import jsonvalues
from kennel.config import Settings
from kennel.errors import InvalidInputError, KennelError, PayloadTooLargeError
from kennel.files.workspace import Upload

MAX_PARTS = 1000


@asynccontextmanager
async def read_multipart(
    request: Request, settings: Settings
) -> AsyncIterator[tuple[dict[str, Any], list[Upload]]]:
    """Text parts as fields, file parts as uploads, for as long as the block lasts (the files'
    spooled copies are closed after it); bodies over the configured limits are refused."""
    parser = MultiPartParser(
        request.headers,
        limited_stream(request, settings.max_upload_request_bytes, "the request"),
        max_files=MAX_PARTS,
        max_fields=MAX_PARTS,
        # A text part is what a JSON body would carry: the same limit holds.
        max_part_size=settings.max_json_bytes,
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise _refusal(error.message, settings) from None
    try:
        fields: dict[str, Any] = {}
        uploads: list[Upload] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if value.size is not None and value.size > settings.max_upload_file_bytes:
                    raise PayloadTooLargeError(
                        f"file {value.filename!r} is larger than "
                        f"{settings.max_upload_file_bytes} bytes"
                    )
                uploads.append(Upload(value.filename or name, value.content_type, value.file))
            else:
                fields[name] = value
        check_fields(fields)
        yield fields, uploads
    finally:
        await form.close()


async def limited_stream(request: Request, limit: int, what: str) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive; `PayloadTooLargeError` once they pass `limit` bytes
    (at once, when the declared `Content-Length` already does). `what` names the body."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"{what} is larger than {limit} bytes")
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLargeError(f"{what} is larger than {limit} bytes")
        yield chunk


def check_fields(fields: dict[str, str]) -> None:
    """Text fields of a form must be storable text, like the strings of a JSON body."""
    for name, value in fields.items():
        problem = jsonvalues.text_problem(name) or jsonvalues.text_problem(value)
        if problem is not None:
            raise InvalidInputError(f"the form field {name!r} {problem}")


def _refusal(message: str, settings: Settings) -> KennelError:
    """Starlette's parser tells its limits apart only by their messages."""
    if message.startswith(("Part exceeded", "Field exceeded")):
        return PayloadTooLargeError(
            f"a text field of the form is larger than {settings.max_json_bytes} bytes "
            "(send long text as a file)"
        )
    if message.startswith("Too many"):
        return PayloadTooLargeError(f"the form has more than {MAX_PARTS} files or fields")
    return InvalidInputError(f"the multipart body is malformed: {message}", code="malformed_form")
