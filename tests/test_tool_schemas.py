"""Tool schemas adapted once per model: every provider sends what pydantic-ai alone would."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic_ai.models import Model, ModelRequestParameters, infer_model, prepare_return_schemas
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import ToolDefinition

from kennel.agent.models import ModelCatalog
from kennel.agent.toolschemas import reuse_adapted_schemas
from kennel.agent.toolset import ToolCatalog
from kennel.config import Settings

MODELS = [
    "openai-chat:gpt-4.1-mini",
    "openai:gpt-4.1-mini",
    "anthropic:claude-sonnet-4-5",
    "google:gemini-2.5-flash",
    "groq:llama-3.3-70b-versatile",
    "mistral:mistral-large-latest",
]
OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"$ref": "#/definitions/tag"}},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
    "required": ["name"],
    "definitions": {"tag": {"type": "string", "enum": ["a", "b"]}},
}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.setenv(variable, "k")


def _plain(name: str) -> Model:
    def provider(provider_name: str) -> OpenAIProvider:
        return OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="k")

    if name.startswith("openai"):
        return infer_model(name, provider_factory=provider)
    return infer_model(name)


async def _parameters(model: Model) -> ModelRequestParameters:
    tools = ToolCatalog()
    await tools.prepare(model)
    output = ToolDefinition(
        name="final_result", parameters_json_schema=OUTPUT_SCHEMA, kind="output"
    )
    return ModelRequestParameters(
        function_tools=tools.definitions(frozenset(tools._tools or ())),
        output_tools=[output],
        output_mode="tool",
        allow_text_output=False,
    )


@pytest.mark.parametrize("name", MODELS)
async def test_adapted_schemas_are_the_ones_pydantic_ai_makes(name: str) -> None:
    settings = Settings(model=name, openai_base_url="http://127.0.0.1:9/v1", openai_api_key="k")
    catalog = ModelCatalog(settings)
    try:
        model = await catalog.get(name)
        parameters = await _parameters(model)
        expected = _plain(name).customize_request_parameters(parameters)
        first = model.customize_request_parameters(parameters)
        again = model.customize_request_parameters(parameters)
    finally:
        await catalog.aclose()

    assert first.function_tools == again.function_tools == expected.function_tools
    assert first.output_tools == again.output_tools == expected.output_tools
    # The second request reuses what the first adapted, when the provider adapts at all.
    for made, reused, given in zip(
        first.function_tools, again.function_tools, parameters.function_tools, strict=True
    ):
        if made.parameters_json_schema is not given.parameters_json_schema:
            assert reused.parameters_json_schema is made.parameters_json_schema


async def test_a_changed_schema_object_is_adapted_anew() -> None:
    model = _plain("openai-chat:gpt-4.1-mini")
    reuse_adapted_schemas(model)
    reuse_adapted_schemas(model)  # a second call changes nothing
    one = ToolDefinition(name="t", parameters_json_schema={"type": "object", "properties": {}})
    other = ToolDefinition(
        name="t",
        parameters_json_schema={"type": "object", "properties": {"x": {"type": "integer"}}},
    )
    first = model.customize_request_parameters(ModelRequestParameters(function_tools=[one]))
    second = model.customize_request_parameters(ModelRequestParameters(function_tools=[other]))

    assert first.function_tools[0].parameters_json_schema["properties"] == {}
    assert second.function_tools[0].parameters_json_schema["properties"] == {
        "x": {"type": "integer"}
    }


@pytest.mark.parametrize("name", MODELS)
async def test_requests_send_the_definitions_without_copying_them(name: str) -> None:
    """The definitions hold no return schema (Kennel never sends one), so a model's request
    preparation has nothing to clear: it sends what a model would have made of them."""
    model = _plain(name)
    parameters = await _parameters(model)
    returning = replace(
        parameters,
        function_tools=[
            replace(tool, return_schema={"type": "string"}) for tool in parameters.function_tools
        ],
    )
    support = bool(model.profile.get("supports_tool_return_schema"))

    assert all(tool.return_schema is None for tool in parameters.function_tools)
    assert prepare_return_schemas(parameters, supports_tool_return_schema=support) is parameters
    cleared = prepare_return_schemas(returning, supports_tool_return_schema=support)
    assert cleared.function_tools == parameters.function_tools
