"""A fetched page's title, as its author named it: `<title>`, else `og:title`, else its first
heading. The page is untrusted, so a title is cleaned (one line, no invisible characters) and
cut to `MAX_TITLE_CHARS` before it reaches the model, `Worker.sources` or a stream.

trafilatura's own metadata prefers a lone `<h1>` to `<title>` and cuts titles at separators
("Guide | Site"), which is right for its archive but not for naming a source.
"""

from __future__ import annotations

import unicodedata
from typing import Any

MAX_TITLE_CHARS = 200
_HEADINGS = "//h2|//h3|//h4|//h5|//h6"
# Controls, invisible formatting (bidirectional overrides, zero-width characters), surrogates
# and private-use characters: none belongs in a one-line title.
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co"})


def html_title(tree: Any) -> str | None:
    """The title of a parsed HTML page (an lxml tree), or None if it names itself nowhere."""
    candidates = [
        *tree.xpath("//head//title"),
        *tree.xpath("//title[not(ancestor::svg)]"),
        *tree.xpath("//meta[@property='og:title' or @name='og:title']/@content"),
        *tree.xpath("//h1"),
        *tree.xpath(_HEADINGS),
    ]
    for candidate in candidates:
        text = candidate if isinstance(candidate, str) else candidate.text_content()
        title = clean_title(text)
        if title:
            return title
    return None


def clean_title(text: str | None) -> str | None:
    """`text` on one line without invisible characters, cut to `MAX_TITLE_CHARS`; None if
    nothing is left."""
    if not text:
        return None
    visible = "".join(c for c in text if unicodedata.category(c) not in _DROPPED or c.isspace())
    line = " ".join(visible.split())
    if len(line) > MAX_TITLE_CHARS:
        line = line[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    return line or None
