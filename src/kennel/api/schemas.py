"""Request bodies (camelCase on the wire, spec §1.4, limits from §13); `bodies` reads them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from kennel.errors import InvalidInputError
from kennel.models import Budget, Visibility

MAX_PAGE = 1_000_000

# 1-based page of a listing; bounded so an offset always fits the database's integers.
PageNumber = Annotated[int, Query(ge=1, le=MAX_PAGE)]


class _Body(BaseModel):
    # Unknown keys are ignored: newer clients may send fields this server does not know yet.
    model_config = ConfigDict(extra="ignore", populate_by_name=False, frozen=True)


class CreateWorkerBody(_Body):
    instructions: str | None = Field(None, max_length=20000)
    output_schema: dict[str, Any] | None = Field(None, alias="outputSchema")
    prompt: str | None = Field(None, max_length=10000)
    summary: str | None = Field(None, max_length=80)
    title: str | None = Field(None, min_length=1, max_length=200)
    visibility: Visibility = Visibility.PUBLIC
    model: str | None = Field(None, min_length=1, max_length=200)
    email_allow_list: list[str] = Field(default_factory=list, alias="emailAllowList")


class UpdateWorkerBody(_Body):
    """Partial update: only keys present in the body change; `outputSchema: null` clears it."""

    instructions: str | None = Field(None, max_length=20000)
    output_schema: dict[str, Any] | None = Field(None, alias="outputSchema")
    summary: str | None = Field(None, max_length=80)
    title: str | None = Field(None, min_length=1, max_length=200)
    visibility: Visibility | None = None
    model: str | None = Field(None, min_length=1, max_length=200)
    email_allow_list: list[str] | None = Field(None, alias="emailAllowList")

    def changes(self) -> dict[str, Any]:
        changes = {name: getattr(self, name) for name in self.model_fields_set}
        for name, value in changes.items():
            if value is None and name not in _NULLABLE:
                alias = type(self).model_fields[name].alias or name
                raise InvalidInputError(f"{alias} may not be null")
        return changes


_NULLABLE = frozenset({"output_schema", "model"})


class CreateTaskBody(_Body):
    input: str = Field(min_length=1)
    budget: Budget = Budget.STANDARD
    stream: bool = False
    task_id: str | None = Field(None, alias="taskId", min_length=1)
    worker_id: str | None = Field(None, alias="workerId", min_length=1)
    metadata: dict[str, Any] | None = None
