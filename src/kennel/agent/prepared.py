"""Model requests prepared once per distinct request shape instead of before every request.

Before each request a pydantic-ai model prepares its inputs (`Model.prepare_request`): it
merges the settings, adapts the tool definitions to its provider, resolves the output mode,
the cache setting and the tools' visibility, copying the request parameters a dozen times on
the way (about 135 µs of CPU for Kennel's eight tools, measured). The result depends on the
settings and the parameters alone, and Kennel asks again and again with the same ones: its
runtime's settings object lives as long as the process, and a turn's parameters are built once
per shape (`loop.request_parameters`). So a model prepared with `reuse_prepared_requests`
remembers what it made of each (settings, parameters) pair, by identity, and hands it back.

Invariants: nothing changes a settings object or a parameters object once it has been passed
to a model, nor what the preparation returned (pydantic-ai builds new ones with `replace`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings

CACHE_SIZE = 256
"""Preparations kept per model: a few shapes per worker in use."""

Prepared = tuple[ModelSettings | None, ModelRequestParameters]


def reuse_prepared_requests(model: Model) -> None:
    """Have `model` prepare each (settings, parameters) pair once and reuse the result."""
    prepare = model.prepare_request
    kept: OrderedDict[tuple[int, int], tuple[Any, ModelRequestParameters, Prepared]]
    kept = OrderedDict()

    def prepared(
        model_settings: ModelSettings | None, model_request_parameters: ModelRequestParameters
    ) -> Prepared:
        # An entry holds its settings and parameters, so no other object can have their ids
        # while it lives: a key found is theirs.
        key = (id(model_settings), id(model_request_parameters))
        known = kept.get(key)
        if known is not None:
            kept.move_to_end(key)
            return known[2]
        result = prepare(model_settings, model_request_parameters)
        kept[key] = (model_settings, model_request_parameters, result)
        if len(kept) > CACHE_SIZE:
            kept.popitem(last=False)
        return result

    vars(model)["prepare_request"] = prepared
