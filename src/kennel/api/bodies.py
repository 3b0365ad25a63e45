"""Request bodies, read within limits: never more bytes than allowed in memory, and only JSON that
Kennel can keep (see `kennel.jsonvalues`).

The limit holds whether or not the client declares a `Content-Length` (a chunked body is counted
as it arrives). A body refused part-way is not read further: the server discards the rest of it
on the same connection, which stays usable for the client's next request.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from starlette.requests import Request

from kennel import jsonvalues
from kennel.errors import InvalidInputError
from kennel.files.uploads import limited_stream


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object in the body; an empty body counts as `{}` (spec §1.3)."""
    raw = bytearray()
    async for chunk in limited_stream(request, limit, "the JSON body"):
        raw += chunk
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        _refuse(f"nests arrays and objects deeper than {jsonvalues.MAX_DEPTH} levels")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError(_not_json(request), code="malformed_json") from None
    if not isinstance(body, dict):
        raise InvalidInputError("the request body must be a JSON object")
    problem = jsonvalues.problem_of(body)
    if problem is not None:
        _refuse(problem)
    return body


def _refuse(problem: str) -> NoReturn:
    raise InvalidInputError(f"the request body {problem}")


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidInputError(
        f"the request body holds {name}, which is not a JSON number", code="malformed_json"
    )


def _not_json(request: Request) -> str:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        return (
            "the request body is not valid JSON: it was sent as a urlencoded form; send JSON, "
            "or multipart/form-data to upload files"
        )
    return "the request body is not valid JSON"
