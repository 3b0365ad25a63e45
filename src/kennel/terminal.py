"""Text for a terminal: values from users and models made inert, and aligned tables of them."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

MAX_CELL = 48
_REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


def inert(text: str, limit: int = MAX_CELL) -> str:
    """`text` on one line with no control, format or unassigned characters, at most `limit`
    long: a worker's title or an e-mail address can't move the cursor, recolour the terminal
    (ANSI escapes) or reorder what follows (bidi overrides)."""
    cleaned = "".join(
        _REPLACEMENT if unicodedata.category(char).startswith("C") else char for char in text
    )
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def width(text: str) -> int:
    """Columns `text` takes: wide (East Asian) characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def render_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()
) -> str:
    """Columns separated by two spaces, headers first; `right` names the right-aligned ones
    (numbers). Every cell is made inert first."""
    cells = [list(headers), *([inert(cell) for cell in row] for row in rows)]
    widths = [max(width(row[index]) for row in cells) for index in range(len(headers))]
    to_right = set(right)
    lines = []
    for row in cells:
        padded = []
        for index, cell in enumerate(row):
            gap = " " * (widths[index] - width(cell))
            padded.append(gap + cell if index in to_right else cell + gap)
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)
