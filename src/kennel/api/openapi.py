"""The OpenAPI document (`/api/openapi.json`): every request body, and the errors as Kennel
answers them, so that clients and fuzzers can build valid requests and check the answers.

Handlers read their bodies themselves (within limits, see `bodies`), so FastAPI can't see them:
each route names its body with `json_body` or `task_bodies`, and `document` moves the models'
schemas into `components`. FastAPI's 422 `HTTPValidationError`, which Kennel never answers, is
replaced by the `Error` it does answer (spec §16.9).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from kennel.models import Budget

JSON = dict[str, Any]
_REFS = "#/components/schemas/{model}"


class Error(BaseModel):
    """Every error answer: a message for people and a stable code for programs."""

    error: str = Field(description="What went wrong, in plain words.")
    code: str = Field(description="A stable machine name, e.g. `invalid_request`, `not_found`.")


_MEANINGS = {
    400: "The request is malformed or invalid (`code` says how).",
    401: "The API key is missing, unknown or revoked.",
    402: "The organization has no credits left.",
    403: "Only the worker's creator may do this.",
    404: "No such object (or one the key may not see), or no such route.",
    409: "The request conflicts with the object's state.",
    413: "The body, a text field or a file is larger than the server takes.",
    429: "Too many requests for this key; see `Retry-After`.",
    500: "An unexpected failure; the server's log tells more.",
    503: "No model is configured for the worker.",
}


def errors(*statuses: int) -> dict[int | str, JSON]:
    """The `responses` of a route for these error statuses."""
    return {status: {"model": Error, "description": _MEANINGS[status]} for status in statuses}


COMMON_ERRORS = errors(400, 401, 429, 500)
"""What any route may answer: a bad parameter, a bad key, too many requests, a failure."""


def success(description: str, *media_types: str) -> dict[int | str, JSON]:
    """The `responses` of a route whose 200 may come in other media types than JSON."""
    return {200: {"description": description, "content": {media: {} for media in media_types}}}


STREAM_OR_JSON = success("JSON, or the live stream when asked for one", "text/event-stream")
FILE_BYTES = success("The file's bytes, in its own media type", "*/*")


def json_body(model: type[BaseModel], *, required: bool = False) -> JSON:
    """The `openapi_extra` of a route that reads `model` as its JSON body (empty means `{}`)."""
    content = {"application/json": {"schema": _schema_of(model)}}
    return {"requestBody": {"required": required, "content": content}}


def task_bodies(model: type[BaseModel]) -> JSON:
    """`POST /api/tasks`: JSON, or a multipart form whose file parts are uploads (spec §16.15)."""
    form: JSON = {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {"type": "string", "minLength": 1},
            "budget": {"type": "string", "enum": [budget.value for budget in Budget]},
            "stream": {"type": "string", "enum": ["true", "false"]},
            "taskId": {"type": "string", "minLength": 1},
            "workerId": {"type": "string", "minLength": 1},
            "files": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "description": "Files for the worker's workspace; any part with a file name "
                "is one, whatever the part's name.",
            },
        },
    }
    extra = json_body(model, required=True)
    extra["requestBody"]["content"]["multipart/form-data"] = {"schema": form}
    return extra


def install(app: FastAPI) -> None:
    app.openapi = lambda: document(app)  # type: ignore[method-assign]


def document(app: FastAPI) -> JSON:
    if app.openapi_schema is None:
        found = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas: JSON = found.setdefault("components", {}).setdefault("schemas", {})
        for operation in _operations(found):
            operation["responses"].pop("422", None)
            for content in operation.get("requestBody", {}).get("content", {}).values():
                content["schema"] = _into_components(content["schema"], schemas)
            operation["security"] = [{"apiKey": []}]
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        found["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "An `hdg_…` API key."}
        }
        app.openapi_schema = found
    return app.openapi_schema


def _schema_of(model: type[BaseModel]) -> JSON:
    return model.model_json_schema(by_alias=True, ref_template=_REFS)


def _into_components(schema: JSON, schemas: JSON) -> JSON:
    """A model's schema moved into `components` (its `$defs` too), replaced by a `$ref`."""
    schemas.update(schema.pop("$defs", {}))
    title = schema.get("title")
    if title is None or schema.get("type") != "object" or "properties" not in schema:
        return schema
    schemas[title] = schema
    return {"$ref": _REFS.format(model=title)}


def _operations(found: JSON) -> list[JSON]:
    return [operation for path in found.get("paths", {}).values() for operation in path.values()]
