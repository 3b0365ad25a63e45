"""Settings: defaults, and parsers that refuse bad values (tests/test_docs.py checks that every
setting is documented)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from kennel.config import Settings


def test_model_prices_parse_and_refuse_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNEL_MODEL_PRICES", "gpt-4.1=2, anthropic:claude=3.5")
    assert Settings().model_prices == {"gpt-4.1": 2.0, "anthropic:claude": 3.5}
    monkeypatch.setenv("KENNEL_MODEL_PRICES", "gpt-4.1")
    with pytest.raises(ValidationError):
        Settings()


def test_openai_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings()
    assert (settings.openai_base_url, settings.openai_api_key) == (
        "http://127.0.0.1:1/v1",
        "sk-test",
    )


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("KENNEL_", "OPENAI_")):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.data_dir == Path(".kennel")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.resolved_database_url == "sqlite+aiosqlite:///.kennel/kennel.db"
    assert settings.base_url == "http://127.0.0.1:8000"
