"""Web tools: `web_search` finds pages, `web_fetch` reads one; every page read is a source, and
so is every search result the answer cites."""

from __future__ import annotations

from typing import Any

from pydantic_ai import RunContext, ToolReturn
from pydantic_ai.exceptions import ToolFailed

from kennel.agent.toolbox import Toolbox

DEFAULT_RESULTS = 5


async def web_search(
    ctx: RunContext[Toolbox], query: str, max_results: int = DEFAULT_RESULTS
) -> dict[str, Any]:
    """Search the web. Returns titles, URLs and snippets; read a page with `web_fetch`.

    Args:
        query: What to search for, as you would type it into a search engine.
        max_results: How many results to return (1 to 20).
    """
    search = ctx.deps.search
    if search is None:
        raise ToolFailed("web search is not available")
    results = await search.search(query, max_results)
    ctx.deps.add_search_results((result.url, result.title) for result in results)
    return {
        "results": [
            {"title": result.title, "url": result.url, "snippet": result.snippet}
            for result in results
        ]
    }


async def web_fetch(ctx: RunContext[Toolbox], url: str) -> ToolReturn:
    """Read a web page (HTML as markdown, PDF and plain text as text); long pages are cut.

    Args:
        url: The page's absolute http(s) URL.
    """
    fetcher = ctx.deps.fetcher
    if fetcher is None:
        raise ToolFailed("fetching web pages is not available")
    page = await fetcher.fetch(url)
    # The engine falls back to the URL for a page without a title: that is no title at all.
    title = page.title if page.title not in (page.final_url, page.url) else None
    content: dict[str, Any] = {"url": page.final_url, "title": title or page.final_url}
    content.update(mediaType=page.media_type, truncated=page.truncated, content=page.content)
    return ToolReturn(content, metadata=ctx.deps.add_source(page.final_url, title))
