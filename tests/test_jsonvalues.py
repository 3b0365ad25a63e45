"""JSON text for the database: NUL never reaches it, and nothing else changes."""

from __future__ import annotations

import json

import pytest

from kennel.jsonvalues import dumps


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("a\x00b", "a\ufffdb"),
        ({"k\x00": ["\x00", 1]}, {"k\ufffd": ["\ufffd", 1]}),
        ("\\\x00", "\\\ufffd"),  # a backslash, then NUL
        ("\\u0000", "\\u0000"),  # the six characters, not NUL: left alone
        ("\\\\u0000", "\\\\u0000"),
        ("plain ✓", "plain ✓"),
    ],
)
def test_dumps_replaces_nul_and_only_nul(value: object, kept: object) -> None:
    text = dumps(value)
    assert "\x00" not in text
    assert json.loads(text) == kept
