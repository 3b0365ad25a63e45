"""A model prepares each request shape once: a turn's parameters are built once per shape and
the model hands back what it made of them."""

from __future__ import annotations

import pytest
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition

from kennel.agent.loop import request_parameters
from kennel.agent.models import ModelCatalog
from kennel.agent.toolset import WRAP_UP
from kennel.config import Settings

TOOL = ToolDefinition(
    name="read_file",
    description="Read a file.",
    parameters_json_schema={"type": "object", "properties": {"path": {"type": "string"}}},
)


def test_a_step_of_the_same_shape_gets_the_same_parameters() -> None:
    first = request_parameters("Be brief.", [TOOL], None, wrapping_up=False)
    assert request_parameters("Be brief.", [TOOL], None, wrapping_up=False) is first
    assert first.function_tools == [TOOL] and first.output_mode == "text"
    others = [
        request_parameters("Be long.", [TOOL], None, wrapping_up=False),
        request_parameters("Be brief.", [], None, wrapping_up=False),
        request_parameters("Be brief.", [], None, wrapping_up=True),
        request_parameters("Be brief.", [TOOL], TOOL, wrapping_up=False),
    ]
    assert all(other is not first for other in others)
    assert len({id(other) for other in others}) == len(others)
    wrap_up = others[2].instruction_parts or []
    assert [part.content for part in wrap_up] == ["Be brief.", WRAP_UP]
    assert others[3].output_mode == "tool" and others[3].output_tools == [TOOL]


async def test_a_model_prepares_each_request_shape_once(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared: list[ModelRequestParameters] = []
    prepare = OpenAIChatModel.prepare_request

    def counted(
        self: OpenAIChatModel, settings: ModelSettings | None, params: ModelRequestParameters
    ) -> tuple[ModelSettings | None, ModelRequestParameters]:
        prepared.append(params)
        return prepare(self, settings, params)

    monkeypatch.setattr(OpenAIChatModel, "prepare_request", counted)
    catalog = ModelCatalog(Settings(openai_base_url="http://model.test/v1", openai_api_key="k"))
    try:
        model = await catalog.get("openai-chat:m")
        settings = ModelSettings(timeout=5)
        params = request_parameters("Be brief.", [TOOL], None, wrapping_up=False)
        first = model.prepare_request(settings, params)
        assert model.prepare_request(settings, params) is first
        assert len(prepared) == 1
        assert first == prepare(model, settings, params)  # what the model itself makes of it
        other = request_parameters("Be long.", [TOOL], None, wrapping_up=False)
        assert model.prepare_request(settings, other) is not first
        assert model.prepare_request(None, params) is not first
        assert len(prepared) == 3
    finally:
        await catalog.aclose()
