"""Tool schemas adapted to a model's provider once per process instead of on every request.

Before each request a pydantic-ai model rewrites every tool's JSON schema for its provider
(`Model.customize_request_parameters`: OpenAI's strict mode, Gemini's and Bedrock's
restrictions...) with the JSON-schema transformer its profile names: a deep copy and a walk of
each schema, on every request, for schemas that never change. `reuse_adapted_schemas` has the
model remember what its transformer made of each schema object and hand that back.

Invariants: a schema is never changed once it has been handed to a model (the tool catalog
builds its definitions once, a turn builds its output tool once), and no model class changes
the adapted schema it sends (they place it in the request body as it is, as they already do
with the schemas of models that have no transformer).
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from typing import Any, cast

from pydantic_ai._json_schema import JsonSchema, JsonSchemaTransformer
from pydantic_ai.models import Model
from pydantic_ai.profiles import ModelProfile

CACHE_SIZE = 512
"""Adapted schemas kept per transformer: the tools' few, and the output schemas of recent turns."""


def reuse_adapted_schemas(model: Model) -> None:
    """Have `model` adapt each tool schema once and reuse the result on later requests.

    A model whose profile is not resolved once per instance (a `cached_property`, as every
    pydantic-ai model class has it) or that has no transformer is left as it is.
    """
    resolved_once = inspect.getattr_static(type(model), "profile", None)
    if not isinstance(resolved_once, functools.cached_property):
        return
    profile = model.profile
    transformer = profile.get("json_schema_transformer")
    if transformer is None or issubclass(transformer, _Remembering):
        return
    remembering = cast(dict[str, Any], dict(profile))
    remembering["json_schema_transformer"] = _remembering(transformer)
    # `Model.profile` is a cached_property: the instance attribute is the resolved profile.
    vars(model)["profile"] = cast(ModelProfile, remembering)


class _Remembering(JsonSchemaTransformer):
    """Marks the transformers `reuse_adapted_schemas` made."""


def _remembering(transformer: type[JsonSchemaTransformer]) -> type[JsonSchemaTransformer]:
    """A subclass of `transformer` whose `walk()` answers from a cache keyed by the schema
    object and `strict`; the cache holds each schema, so its id cannot be reused meanwhile."""
    walked: OrderedDict[tuple[int, bool | None], tuple[JsonSchema, JsonSchema, bool]]
    walked = OrderedDict()

    class Remembering(transformer, _Remembering):  # type: ignore[valid-type,misc]
        def __init__(self, schema: JsonSchema, *, strict: bool | None = None, **options: Any):
            # The base class copies the schema's definitions here: only a walk needs them.
            self.schema = schema
            self.strict = strict
            self.is_strict_compatible = True
            self._options = options

        def walk(self) -> JsonSchema:
            key = (id(self.schema), self.strict)
            known = walked.get(key) if not self._options else None
            if known is not None and known[0] is self.schema:
                walked.move_to_end(key)
                self.is_strict_compatible = known[2]
                return known[1]
            adapter = transformer(self.schema, strict=self.strict, **self._options)
            adapted = adapter.walk()
            self.is_strict_compatible = adapter.is_strict_compatible
            if not self._options:
                walked[key] = (self.schema, adapted, adapter.is_strict_compatible)
                if len(walked) > CACHE_SIZE:
                    walked.popitem(last=False)
            return adapted

    Remembering.__name__ = Remembering.__qualname__ = f"Remembering{transformer.__name__}"
    return Remembering
