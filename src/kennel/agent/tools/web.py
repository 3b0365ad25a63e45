"""The web tools' engine: `WebFetcher` reads one page for the model, `WebSearch` finds pages.

Neither knows pydantic-ai's agent; the `web_fetch` and `web_search` tools wrap them. Every
failure raises `ToolFailed` with a message written for the model (an HTTP status, a timeout, a
refused address, a type it can't read), so a failed call is a tool result, never a failed turn.
"""

from __future__ import annotations

import asyncio
import html
import io
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import ddgs
import httpx
from ddgs.exceptions import DDGSException
from pydantic_ai.exceptions import ToolFailed

from kennel.agent.tools.titles import clean_title, html_title
from kennel.config import Settings
from kennel.netpolicy import UnsafeURLError, check_url, guarded_client

USER_AGENT = "Mozilla/5.0 (compatible; Kennel/0.1; AI worker)"
ACCEPT = "text/html,application/xhtml+xml,application/pdf,text/plain;q=0.9,*/*;q=0.5"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_SEARCH_RESULTS = 20
MAX_SNIPPET_CHARS = 500

Kind = Literal["html", "pdf", "text"]
_TEXT_TYPES = frozenset(
    {"application/json", "application/xml", "application/javascript", "application/x-ndjson"}
)
_TAGS = re.compile(r"<[^>]+>")


@dataclass(frozen=True, slots=True)
class FetchedPage:
    """A page as the model reads it: markdown or text, cut to the configured size."""

    url: str
    """The URL asked for."""
    final_url: str
    """Where the redirects ended."""
    title: str
    """The page's title (`<title>`, `og:title` or first heading, cleaned), or its final URL
    when it has none."""
    content: str
    media_type: str
    truncated: bool
    """Whether `content` is only the beginning of the page (it then ends with a note)."""


class WebFetcher:
    """Fetches pages through the guarded client: timeouts, a byte cap, checked redirects."""

    def __init__(self, settings: Settings) -> None:
        self._allowed = settings.allow_private_networks
        self._timeout = settings.web_timeout_seconds
        self._max_bytes = settings.web_fetch_max_bytes
        self._max_redirects = settings.web_fetch_max_redirects
        self._max_chars = settings.web_fetch_max_chars
        self._client = guarded_client(
            self._allowed,
            timeout=self._timeout,
            headers={"user-agent": USER_AGENT, "accept": ACCEPT},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> FetchedPage:
        """Download `url` and convert it: HTML to markdown, PDF to text, text as it is."""
        try:
            async with asyncio.timeout(self._timeout):
                response, body, cut = await self._download(url)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolFailed(f"fetching {url} timed out after {self._timeout:g} s") from None
        except UnsafeURLError as error:
            raise ToolFailed(f"refused to fetch {url}: {error}") from None
        except httpx.HTTPError as error:
            raise ToolFailed(f"could not fetch {url}: {error or type(error).__name__}") from None
        media_type = _media_type(response) or _sniff(body)
        kind = _kind(media_type)
        if kind is None:
            raise ToolFailed(_unreadable(url, media_type))
        if kind == "pdf" and cut:
            raise ToolFailed(f"{url} is a PDF larger than {self._max_bytes} bytes")
        final_url = str(response.url)
        charset = response.charset_encoding
        title, text = await asyncio.to_thread(_convert, kind, body, charset)
        content, clipped = _clip(text, self._max_chars, cut)
        return FetchedPage(url, final_url, title or final_url, content, media_type, cut or clipped)

    async def _download(self, url: str) -> tuple[httpx.Response, bytes, bool]:
        """The response at the end of the redirects, its body up to the cap, and whether the
        body was cut there."""
        current = url
        for _ in range(self._max_redirects + 1):
            check_url(current, allow_http=True, allowed_networks=self._allowed)
            async with self._client.stream("GET", current) as response:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    current = str(response.url.join(location))
                    continue
                if response.status_code >= 400:
                    raise ToolFailed(
                        f"{current} answered HTTP {response.status_code} {response.reason_phrase}"
                    )
                media_type = _media_type(response)
                if media_type and _kind(media_type) is None:
                    raise ToolFailed(_unreadable(current, media_type))
                body, cut = await self._read(response)
                return response, body, cut
        raise ToolFailed(f"{url} redirected more than {self._max_redirects} times")

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_bytes:
                return b"".join(chunks)[: self._max_bytes], True
        return b"".join(chunks), False


def _media_type(response: httpx.Response) -> str:
    header: str = response.headers.get("content-type", "")
    return header.split(";", 1)[0].strip().lower()


def _sniff(body: bytes) -> str:
    """A media type for a body sent without one."""
    head = body[:1024].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return "application/pdf"
    if head.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    try:
        body[:4096].decode()
    except UnicodeDecodeError as error:
        if error.start < 4090:  # not a character cut in two by the slice
            return "application/octet-stream"
    return "text/plain"


def _kind(media_type: str) -> Kind | None:
    if media_type in ("text/html", "application/xhtml+xml"):
        return "html"
    if media_type == "application/pdf":
        return "pdf"
    if (
        media_type.startswith("text/")
        or media_type in _TEXT_TYPES
        or media_type.endswith(("+json", "+xml"))
    ):
        return "text"
    return None


def _unreadable(url: str, media_type: str) -> str:
    return f"{url} is {media_type}; web_fetch reads only HTML, PDF, JSON and text"


def _convert(kind: Kind, body: bytes, charset: str | None) -> tuple[str | None, str]:
    """The title (if any) and the text of a body; CPU work, run in a thread."""
    # trafilatura and pypdf load on first use: they add half a second to every start.
    import trafilatura

    if kind == "pdf":
        return _pdf_text(body)
    text = _decode(body, charset)
    if kind == "text":
        return None, text
    tree = trafilatura.load_html(text)
    if tree is None:
        return None, text
    title = html_title(tree)
    # `fast`: no second-opinion extractors; when the main content is empty the whole page's
    # visible text (navigation, footers and all) is a better answer than nothing.
    markdown = trafilatura.extract(
        text, fast=True, output_format="markdown", include_links=True, include_tables=True
    )
    if markdown:
        return title, markdown
    for element in tree.xpath("//script|//style|//noscript|//template"):
        element.drop_tree()
    return title, trafilatura.html2txt(tree, clean=False)


def _pdf_text(body: bytes) -> tuple[str | None, str]:
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(body))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = clean_title(reader.metadata.title) if reader.metadata else None
    # pypdf raises many kinds of errors on malformed or encrypted files.
    except Exception as error:
        raise ToolFailed(f"the PDF could not be read: {error}") from None
    return title, "\n\n".join(page.strip() for page in pages if page.strip())


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python doesn't know
        return body.decode("utf-8", errors="replace")


def _clip(text: str, limit: int, cut: bool) -> tuple[str, bool]:
    """The text the model gets, with a note when it is not the whole page."""
    if not text.strip():
        return "[The page has no readable text.]", cut
    if len(text) > limit:
        note = f"[Truncated: these are the first {limit} of {len(text)} characters.]"
        return f"{text[:limit]}\n\n{note}", True
    if cut:
        return f"{text}\n\n[Truncated: the page is longer than this; this is its beginning.]", True
    return text, False


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One hit: a candidate source the worker may fetch and cite."""

    title: str
    url: str
    snippet: str


class SearchProvider(Protocol):
    """One web search backend; it raises `ToolFailed`, `httpx.HTTPError` or `ValueError`."""

    async def search(self, query: str, max_results: int) -> list[SearchResult]:
        """At most `max_results` hits for `query`, best first."""
        ...


class WebSearch:
    """Searches the web with the provider the settings name (`KENNEL_SEARCH_PROVIDER`)."""

    def __init__(self, settings: Settings) -> None:
        self._timeout = settings.web_timeout_seconds
        self._name = settings.search_provider
        self._client: httpx.AsyncClient | None = None
        self._provider: SearchProvider
        if settings.search_provider == "ddgs":
            self._provider = DuckDuckGoSearch(settings.web_timeout_seconds)
        else:
            # Search APIs are the operator's choice (SearXNG often runs on a private network):
            # a plain client, not the guarded one.
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                headers={"user-agent": USER_AGENT, "accept": "application/json"},
            )
            self._provider = _api_provider(settings, self._client)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def search(self, query: str, max_results: int = 10) -> list[SearchResult]:
        """Up to `max_results` (at most 20) distinct results for `query`, best first."""
        query = query.strip()
        if not query:
            raise ToolFailed("the search query is empty")
        count = max(1, min(max_results, MAX_SEARCH_RESULTS))
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._provider.search(query, count)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolFailed(f"the web search timed out after {self._timeout:g} s") from None
        except httpx.HTTPStatusError as error:
            status = error.response.status_code
            raise ToolFailed(f"the {self._name} search answered HTTP {status}") from None
        except httpx.HTTPError as error:
            raise ToolFailed(f"the {self._name} search could not be reached: {error}") from None
        except ValueError:
            raise ToolFailed(f"the {self._name} search sent an unreadable answer") from None
        unique: dict[str, SearchResult] = {}
        for result in results:
            unique.setdefault(result.url, result)
        return list(unique.values())[:count]


def _api_provider(settings: Settings, client: httpx.AsyncClient) -> SearchProvider:
    # `Settings` refuses a provider without its key or URL, so the fallbacks never apply.
    key = settings.search_api_key or ""
    if settings.search_provider == "brave":
        return BraveSearch(client, settings.brave_search_url, key)
    if settings.search_provider == "tavily":
        return TavilySearch(client, settings.tavily_search_url, key)
    return SearxngSearch(client, settings.searxng_url or "")


class DuckDuckGoSearch:
    """DuckDuckGo and friends through the `ddgs` package (synchronous: run in a thread)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = math.ceil(timeout)

    async def search(self, query: str, max_results: int) -> list[SearchResult]:
        """At most `max_results` hits for `query`, best first."""
        return await asyncio.to_thread(self._search, query, max_results)

    def _search(self, query: str, max_results: int) -> list[SearchResult]:
        try:
            hits = ddgs.DDGS(timeout=self._timeout).text(query, max_results=max_results)
        except DDGSException as error:
            raise ToolFailed(f"the web search failed: {error}") from None
        return _results(hits, "title", "href", "body")


class BraveSearch:
    """The Brave Web Search API (`X-Subscription-Token`; hits under `web.results`)."""

    def __init__(self, client: httpx.AsyncClient, url: str, key: str) -> None:
        self._client, self._url, self._key = client, url, key

    async def search(self, query: str, max_results: int) -> list[SearchResult]:
        """At most `max_results` hits for `query`, best first."""
        response = await self._client.get(
            self._url,
            params={"q": query, "count": max_results},
            headers={"x-subscription-token": self._key},
        )
        response.raise_for_status()
        web = _mapping(response.json()).get("web") or {}
        return _results(_mapping(web).get("results"), "title", "url", "description")


class TavilySearch:
    """The Tavily search API (a bearer key; hits under `results`)."""

    def __init__(self, client: httpx.AsyncClient, url: str, key: str) -> None:
        self._client, self._url, self._key = client, url, key

    async def search(self, query: str, max_results: int) -> list[SearchResult]:
        """At most `max_results` hits for `query`, best first."""
        response = await self._client.post(
            self._url,
            json={"query": query, "max_results": max_results, "search_depth": "basic"},
            headers={"authorization": f"Bearer {self._key}"},
        )
        response.raise_for_status()
        return _results(_mapping(response.json()).get("results"), "title", "url", "content")


class SearxngSearch:
    """A SearXNG instance's JSON API (`/search?format=json`; hits under `results`)."""

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self._client, self._url = client, base_url.rstrip("/") + "/search"

    async def search(self, query: str, max_results: int) -> list[SearchResult]:
        """At most `max_results` hits for `query`, best first (SearXNG has no count)."""
        response = await self._client.get(self._url, params={"q": query, "format": "json"})
        response.raise_for_status()
        hits = _results(_mapping(response.json()).get("results"), "title", "url", "content")
        return hits[:max_results]


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _results(hits: Any, title: str, url: str, snippet: str) -> list[SearchResult]:
    """Search results from a provider's list of hits; hits without an http(s) URL are dropped."""
    if hits is None:
        return []
    if not isinstance(hits, list):
        raise ValueError("expected a list of results")
    results = []
    for hit in hits:
        link = _mapping(hit).get(url)
        if isinstance(link, str) and link.startswith(("https://", "http://")):
            results.append(
                SearchResult(_plain(hit.get(title)) or link, link, _plain(hit.get(snippet)))
            )
    return results


def _plain(value: Any) -> str:
    """Provider text without its highlighting markup (`<strong>`), entities decoded."""
    if not isinstance(value, str):
        return ""
    return html.unescape(_TAGS.sub("", value)).strip()[:MAX_SNIPPET_CHARS]
