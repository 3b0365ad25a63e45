"""Markdown from models, tools and users, rendered so that none of it can run in the page.

Raw HTML is off (it shows as text), every value is escaped by markdown-it, links may only use
web and mail schemes and get `rel="noopener noreferrer nofollow"`, and images become links:
an image would load a third-party URL the moment the page opens.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.renderer import RendererHTML
    from markdown_it.token import Token
    from markdown_it.utils import EnvType, OptionsDict

LINK_REL = "noopener noreferrer nofollow"
_SAFE_SCHEMES = ("http:", "https:", "mailto:")


def _is_safe_link(url: str) -> bool:
    lowered = url.strip().lower()
    if ":" not in lowered.split("/", 1)[0]:
        return True  # relative: stays on the dashboard
    return lowered.startswith(_SAFE_SCHEMES)


def _link_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    token.attrSet("rel", LINK_REL)
    token.attrSet("target", "_blank")
    return self.renderToken(tokens, idx, options, env)


@functools.cache
def _markdown() -> MarkdownIt:
    """Built on the first page that renders markdown: markdown-it (~70 modules, ~1 MB) stays
    out of a server that only answers the API."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    md.validateLink = _is_safe_link  # type: ignore[method-assign]
    md.add_render_rule("link_open", _link_open)
    return md


def render_markdown(text: Any) -> Markup:
    """Safe HTML for untrusted markdown (the output is trusted by the templates)."""
    return Markup(_markdown().render(str(text or "")))  # noqa: S704 (escaped by markdown-it)
