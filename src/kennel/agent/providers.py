"""What Kennel tells operators about model providers: the variables that hold their API key
and base URL, and the providers worth naming when a model name is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

OPENAI_PROVIDERS = frozenset({"openai", "openai-chat", "openai-responses"})
"""The providers Kennel builds itself, from `KENNEL_OPENAI_BASE_URL` and `KENNEL_OPENAI_API_KEY`."""

COMMON_PROVIDERS = (
    "openai-chat",
    "openai",
    "anthropic",
    "google",
    "groq",
    "mistral",
    "ollama",
    "deepseek",
    "openrouter",
)
"""Named in error messages; pydantic-ai knows more (its providers whose library is installed)."""

EXAMPLE_MODEL = "openai-chat:gpt-4.1-mini"


@dataclass(frozen=True, slots=True)
class ProviderVariables:
    """Where a provider reads its API key and its base URL (environment variable names)."""

    api_key: str
    base_url: str


_OPENAI = ProviderVariables(
    api_key="KENNEL_OPENAI_API_KEY (or OPENAI_API_KEY)",
    base_url="KENNEL_OPENAI_BASE_URL (or OPENAI_BASE_URL)",
)
# The names pydantic-ai's providers (and the SDKs under them) read from the environment.
_KNOWN = {
    **dict.fromkeys(OPENAI_PROVIDERS, _OPENAI),
    "anthropic": ProviderVariables("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "google": ProviderVariables("GOOGLE_API_KEY (or GEMINI_API_KEY)", "the provider's base URL"),
    "groq": ProviderVariables("GROQ_API_KEY", "GROQ_BASE_URL"),
    "mistral": ProviderVariables("MISTRAL_API_KEY", "the provider's base URL"),
    "ollama": ProviderVariables("OLLAMA_API_KEY", "OLLAMA_BASE_URL"),
    "deepseek": ProviderVariables("DEEPSEEK_API_KEY", "the provider's base URL"),
    "openrouter": ProviderVariables("OPENROUTER_API_KEY", "the provider's base URL"),
}
_UNKNOWN = ProviderVariables("the provider's API key variable", "the provider's base URL variable")


def split_name(model_name: str) -> tuple[str, str]:
    """`provider:model` as its two parts; the provider is empty when there is no colon."""
    provider, sep, model = model_name.partition(":")
    return (provider, model) if sep else ("", model_name)


def variables_of(provider: str) -> ProviderVariables:
    return _KNOWN.get(provider, _UNKNOWN)


def safe_url(url: str) -> str:
    """Scheme, host, port and path of a URL, for logs: some providers take a key in the query
    string or the user part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
