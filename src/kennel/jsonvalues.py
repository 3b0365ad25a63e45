"""What a JSON value from outside (a request body, a schema a model wrote) must be before Kennel
keeps it.

Each limit stands for a failure seen deeper down: nesting past a few hundred levels overflows the
recursion of `json`, `jsonschema` and the database drivers; PostgreSQL refuses the NUL character
in text and JSON; a lone surrogate (`"\\ud800"`) is no Unicode text and fails as UTF-8; NaN and
Infinity are not JSON, although Python's `json` reads and writes them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

MAX_DEPTH = 64
"""Arrays and objects inside one another; `{}` is one level, `{"a": []}` two."""


def problem_of(value: object, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why `value` can't be kept as JSON, as a phrase without its subject ("nests ..."), or None.
    Runs on every request body: one pass, strings and numbers checked where they are met."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
            problem = next(filter(None, map(text_problem, item)), None)  # the keys
            if problem is not None:
                return problem
        elif isinstance(item, list):
            children = item
        else:  # a scalar at the top
            children = (item,)
        for child in children:
            if isinstance(child, str):
                if "\x00" in child or not child.isascii():
                    problem = text_problem(child)
                    if problem is not None:
                        return problem
            elif isinstance(child, dict | list):
                if depth + 1 > max_depth:
                    return f"nests arrays and objects deeper than {max_depth} levels"
                pending.append((child, depth + 1))
            elif isinstance(child, float) and not math.isfinite(child):
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


# The escape of NUL in JSON text: behind an even run of backslashes, or none, it is an escape;
# behind an odd one, the text itself holds a backslash then "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def without_nul(json_text: str) -> str:
    """JSON text whose strings hold no NUL: each becomes U+FFFD. PostgreSQL refuses NUL in text
    and JSON, and models, tools, pages and mails can all produce one."""
    if r"\u0000" not in json_text:
        return json_text
    return _NUL_ESCAPE.sub(lambda match: match.group(1) + r"\ufffd", json_text)


def dumps(value: object) -> str:
    """JSON text for the database: compact, and without NUL (see `without_nul`)."""
    return without_nul(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
