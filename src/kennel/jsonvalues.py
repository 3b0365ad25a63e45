"""What a JSON value from outside (a request body, a schema a model wrote) must be before Kennel
keeps it.

Each limit stands for a failure seen deeper down: nesting past a few hundred levels overflows the
recursion of `json`, `jsonschema` and the database drivers; PostgreSQL refuses the NUL character
in text and JSON; a lone surrogate (`"\\ud800"`) is no Unicode text and fails as UTF-8; NaN and
Infinity are not JSON, although Python's `json` reads and writes them.
"""

from __future__ import annotations

import math

MAX_DEPTH = 64
"""Arrays and objects inside one another; `{}` is one level, `{"a": []}` two."""


def problem_of(value: object, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why `value` can't be kept as JSON, as a phrase without its subject ("nests ..."), or None."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth + 1 > max_depth:
                return f"nests arrays and objects deeper than {max_depth} levels"
            children = list(item.values()) if isinstance(item, dict) else item
            keys = list(item.keys()) if isinstance(item, dict) else []
            stack.extend((child, depth + 1) for child in [*keys, *children])
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return problem
        elif isinstance(item, float) and not math.isfinite(item):
            return "holds NaN or Infinity, which are not JSON numbers"
    return None


def text_problem(text: str) -> str | None:
    """Why `text` can't be stored as text, as a phrase without its subject, or None."""
    if "\x00" in text:
        return "contains the NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
    return None
