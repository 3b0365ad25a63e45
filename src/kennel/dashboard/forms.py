"""Reading the worker form: the same limits as the API's request bodies (spec §13)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kennel.dashboard.deps import Posted
from kennel.errors import InvalidInputError
from kennel.models import JSONObject, Visibility
from kennel.services.workers import WorkerDraft, check_output_schema

LIMITS = {"title": 200, "instructions": 20000, "summary": 80, "prompt": 10000, "model": 200}


@dataclass(frozen=True, slots=True)
class WorkerForm:
    """What the worker form holds, as typed (so a refused form comes back filled in)."""

    title: str = ""
    summary: str = ""
    instructions: str = ""
    output_schema: str = ""
    visibility: str = Visibility.PUBLIC.value
    model: str = ""
    prompt: str = ""

    @classmethod
    def read(cls, posted: Posted) -> WorkerForm:
        defaults = cls()
        return cls(
            **{
                name: posted.text(name, getattr(defaults, name)).strip()
                for name in cls.__dataclass_fields__
            }
        )

    def check(self) -> None:
        for name, limit in LIMITS.items():
            if len(getattr(self, name)) > limit:
                raise InvalidInputError(f"{name} is longer than {limit} characters")
        if self.visibility not in {v.value for v in Visibility}:
            raise InvalidInputError("visibility must be public or private")

    def schema(self) -> JSONObject | None:
        return parse_schema(self.output_schema)

    def draft(self) -> WorkerDraft:
        self.check()
        described = bool(self.prompt) and not self.instructions
        return WorkerDraft(
            instructions=None if described else self.instructions,
            output_schema=self.schema(),
            prompt=self.prompt or None,
            summary=self.summary or None,
            title=self.title or None,
            visibility=Visibility(self.visibility),
            model=self.model or None,
        )

    def changes(self) -> dict[str, Any]:
        """Every field of the edit form; an empty schema or model clears it."""
        self.check()
        if not self.title:
            raise InvalidInputError("a worker needs a title")
        return {
            "title": self.title,
            "summary": self.summary,
            "instructions": self.instructions,
            "output_schema": self.schema(),
            "visibility": Visibility(self.visibility),
            "model": self.model or None,
        }


def parse_schema(text: str) -> JSONObject | None:
    """An output schema typed as JSON text: none when empty, else a valid Draft-07 schema of
    an object (the service's own rule)."""
    if not text.strip():
        return None
    try:
        schema = json.loads(text)
    except ValueError as error:
        raise InvalidInputError(f"the output schema is not valid JSON: {error}") from None
    if not isinstance(schema, dict):
        raise InvalidInputError("the output schema must be a JSON object")
    check_output_schema(schema)
    return schema
