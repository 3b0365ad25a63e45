"""The web tools' engine: fetching pages from a local website, and each search provider
against a local fake of its API (ddgs through a stand-in class). Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import socket
from typing import Any, ClassVar

import ddgs
import pytest
from ddgs.exceptions import DDGSException
from pydantic import ValidationError
from pydantic_ai.exceptions import ToolFailed

from kennel.agent.tools.web import FetchedPage, SearchResult, WebFetcher, WebSearch
from kennel.config import Settings
from server import free_port
from website import NOTES, PDF_TEXT, PDF_TITLE, LocalSite

LOOPBACK = "127.0.0.1/32"


@pytest.fixture(autouse=True)
def _forget_requests(website: LocalSite) -> None:
    website.requests.clear()


def settings(**overrides: Any) -> Settings:
    return Settings(**{"allow_private_networks": LOOPBACK, **overrides})


async def fetch(url: str, **overrides: Any) -> FetchedPage:
    fetcher = WebFetcher(settings(**overrides))
    try:
        return await fetcher.fetch(url)
    finally:
        await fetcher.aclose()


async def search(query: str, max_results: int = 10, **overrides: Any) -> list[SearchResult]:
    web = WebSearch(settings(**overrides))
    try:
        return await web.search(query, max_results)
    finally:
        await web.aclose()


# Fetching


async def test_html_becomes_markdown_of_the_main_content(website: LocalSite) -> None:
    url = website.url("/article.html")
    page = await fetch(url)
    assert (page.url, page.final_url, page.media_type) == (url, url, "text/html")
    assert page.title == "Kennel field guide"
    assert page.content.startswith("# Kennel field guide")
    assert "[kenil](https://example.com/kenil)" in page.content
    assert "- Sled teams" in page.content
    assert "Login" not in page.content and "Copyright" not in page.content
    assert page.truncated is False


async def test_a_page_without_main_content_falls_back_to_its_whole_text(website: LocalSite) -> None:
    page = await fetch(website.url("/furniture.html"))
    assert page.title == "Only furniture"
    assert "Opening hours: nine to five" in page.content
    assert "Closed on Sundays" in page.content
    assert "tracking" not in page.content


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("title-and-heading", "Feeding guide | Kennel Club"),  # not the heading, not cut
        ("open-graph", "Sled dogs & their kennels"),  # an empty <title> names nothing
        ("headings", "Hound packs"),  # the first <h1>; an SVG's <title> is not the page's
        ("lower-heading", "Opening hours"),
        ("untitled", None),
    ],
)
async def test_a_page_is_titled_by_its_title_then_og_title_then_heading(
    website: LocalSite, name: str, title: str | None
) -> None:
    url = website.url(f"/titled/{name}")
    page = await fetch(url)
    assert page.title == (title or url)


async def test_a_hostile_title_is_one_clean_bounded_line(website: LocalSite) -> None:
    page = await fetch(website.url("/titled/hostile"))
    assert page.title.startswith("Kennel guide woof woof")
    assert page.title.isprintable()
    assert len(page.title) == 200 and page.title.endswith("…")


@pytest.mark.parametrize("path", ["/doc.pdf", "/untyped"])
async def test_pdfs_become_text(website: LocalSite, path: str) -> None:
    page = await fetch(website.url(path))
    assert page.media_type == "application/pdf"
    assert page.title == PDF_TITLE
    assert page.content == PDF_TEXT


@pytest.mark.parametrize(
    ("path", "content", "media_type"),
    [("/notes.txt", NOTES, "text/plain"), ("/data.json", '{"dogs": 3}', "application/json")],
)
async def test_text_and_json_pass_through(
    website: LocalSite, path: str, content: str, media_type: str
) -> None:
    page = await fetch(website.url(path))
    assert (page.content, page.media_type) == (content, media_type)
    assert page.title == website.url(path)  # no title of its own


async def test_binary_types_are_refused(website: LocalSite) -> None:
    with pytest.raises(ToolFailed, match="image/png; web_fetch reads only HTML, PDF"):
        await fetch(website.url("/image.png"))


async def test_redirects_are_followed_up_to_the_limit(website: LocalSite) -> None:
    page = await fetch(website.url("/hop/3"), web_fetch_max_redirects=4)
    assert page.url == website.url("/hop/3")
    assert page.final_url == website.url("/article.html")
    assert page.title == "Kennel field guide"
    with pytest.raises(ToolFailed, match="redirected more than 3 times"):
        await fetch(website.url("/hop/3"), web_fetch_max_redirects=3)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", r"loopback or reserved address"),
        ("http://10.1.2.3/", r"loopback or reserved address"),
        ("file:///etc/passwd", r"must start with https:// or http://"),
    ],
)
async def test_a_redirect_to_a_refused_destination_fails(
    website: LocalSite, target: str, reason: str
) -> None:
    with pytest.raises(ToolFailed, match=f"refused to fetch .*{reason}"):
        await fetch(website.url(f"/redirect?to={target}"))


async def test_loopback_is_refused_unless_allow_listed(
    website: LocalSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ToolFailed, match=r"refused to fetch .*127\.0\.0\.1"):
        await fetch(website.url("/notes.txt"), allow_private_networks=())
    with pytest.raises(ToolFailed, match=r"refused to fetch .*\(127\.0\.0\.1\)"):
        await fetch(f"http://localhost:{website.port}/notes.txt", allow_private_networks=())
    # A DNS name is resolved and checked when the connection is made.
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("intranet.test", b"intranet.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    url = f"http://intranet.test:{website.port}/notes.txt"
    with pytest.raises(ToolFailed, match=r"intranet\.test points at a private, loopback"):
        await fetch(url, allow_private_networks=())
    assert (await fetch(url)).content == NOTES


async def test_a_long_body_is_cut_at_the_byte_cap(website: LocalSite) -> None:
    page = await fetch(website.url("/big.txt"), web_fetch_max_bytes=1000)
    assert page.truncated is True
    text, note = page.content.split("\n\n")
    assert len(text) == 1000 and text.startswith("woof woof")
    assert note == "[Truncated: the page is longer than this; this is its beginning.]"


async def test_a_pdf_over_the_byte_cap_is_refused(website: LocalSite) -> None:
    with pytest.raises(ToolFailed, match="is a PDF larger than 100 bytes"):
        await fetch(website.url("/doc.pdf"), web_fetch_max_bytes=100)


async def test_the_model_gets_at_most_the_configured_characters(website: LocalSite) -> None:
    page = await fetch(website.url("/notes.txt"), web_fetch_max_chars=11)
    assert page.truncated is True
    note = f"[Truncated: these are the first 11 of {len(NOTES)} characters.]"
    assert page.content == f"Plain notes\n\n{note}"


async def test_a_slow_server_times_out(website: LocalSite) -> None:
    with pytest.raises(ToolFailed, match=r"/slow timed out after 0\.3 s"):
        await fetch(website.url("/slow"), web_timeout_seconds=0.3)


async def test_http_errors_reach_the_model(website: LocalSite) -> None:
    with pytest.raises(ToolFailed, match="answered HTTP 404 Not Found"):
        await fetch(website.url("/status/404"))
    with pytest.raises(ToolFailed, match=r"could not fetch http://127\.0\.0\.1:"):
        await fetch(f"http://127.0.0.1:{free_port()}/")


# Searching


async def test_brave(website: LocalSite) -> None:
    results = await search(
        "kennels",
        5,
        search_provider="brave",
        search_api_key="brave-key",
        brave_search_url=website.url("/brave/web/search"),
    )
    assert results == [
        SearchResult("Brave kennel one", "https://one.example/kennels", "The first kennel."),
        SearchResult("Brave kennel two", "https://two.example/kennels", "The second kennel."),
    ]
    [request] = website.requests
    assert request.query == {"q": "kennels", "count": "5"}
    assert request.headers["x-subscription-token"] == "brave-key"


async def test_tavily(website: LocalSite) -> None:
    results = await search(
        "kennels",
        3,
        search_provider="tavily",
        search_api_key="tvly-key",
        tavily_search_url=website.url("/tavily/search"),
    )
    assert results == [
        SearchResult("Tavily kennel", "https://tavily.example/kennel", "A kennel found by Tavily.")
    ]
    [request] = website.requests
    assert request.headers["authorization"] == "Bearer tvly-key"
    assert json.loads(request.body) == {
        "query": "kennels",
        "max_results": 3,
        "search_depth": "basic",
    }


async def test_searxng(website: LocalSite) -> None:
    options = {"search_provider": "searxng", "searxng_url": website.url("/searxng/")}
    results = await search("kennels", **options)
    assert [result.title for result in results] == ["SearXNG kennel", "Second"]
    assert results[0].snippet == "A kennel found by SearXNG."
    assert (await search("kennels", 1, **options))[0].url == "https://searx.example/kennel"
    assert website.requests[0].query == {"q": "kennels", "format": "json"}


async def test_provider_failures_reach_the_model(website: LocalSite) -> None:
    brave = {"search_provider": "brave", "search_api_key": "k"}
    with pytest.raises(ToolFailed, match="the brave search answered HTTP 500"):
        await search("kennels", **brave, brave_search_url=website.url("/status/500"))
    with pytest.raises(ToolFailed, match="the brave search sent an unreadable answer"):
        await search("kennels", **brave, brave_search_url=website.url("/notes.txt"))
    slow = {"brave_search_url": website.url("/slow"), "web_timeout_seconds": 0.3}
    with pytest.raises(ToolFailed, match=r"timed out after 0\.3 s"):
        await search("kennels", **brave, **slow)
    with pytest.raises(ToolFailed, match="the search query is empty"):
        await search("  ", **brave)


class FakeDDGS:
    """Stands in for `ddgs.DDGS`; records its calls and answers `hits` (or raises them)."""

    calls: ClassVar[list[tuple[int | None, str, int]]] = []
    hits: ClassVar[list[dict[str, str]] | Exception] = []

    def __init__(self, timeout: int | None = 5) -> None:
        self.timeout = timeout

    def text(self, query: str, *, max_results: int) -> list[dict[str, str]]:
        FakeDDGS.calls.append((self.timeout, query, max_results))
        if isinstance(FakeDDGS.hits, Exception):
            raise FakeDDGS.hits
        return FakeDDGS.hits


@pytest.fixture
def fake_ddgs(monkeypatch: pytest.MonkeyPatch) -> type[FakeDDGS]:
    monkeypatch.setattr(ddgs, "DDGS", FakeDDGS)
    FakeDDGS.calls = []
    return FakeDDGS


async def test_ddgs_is_the_default(fake_ddgs: type[FakeDDGS]) -> None:
    fake_ddgs.hits = [
        {"title": "One", "href": "https://one.example/", "body": "First &amp; best"},
        {"title": "Again", "href": "https://one.example/", "body": "duplicate"},
        {"title": "Mail", "href": "mailto:dogs@example.com", "body": "not a page"},
        {"title": "", "href": "https://two.example/", "body": ""},
    ]
    results = await search("kennels", 50, web_timeout_seconds=7.5)
    assert results == [
        SearchResult("One", "https://one.example/", "First & best"),
        SearchResult("https://two.example/", "https://two.example/", ""),
    ]
    assert fake_ddgs.calls == [(8, "kennels", 20)]


async def test_ddgs_failures_reach_the_model(fake_ddgs: type[FakeDDGS]) -> None:
    fake_ddgs.hits = DDGSException("https://duckduckgo.com 202 Ratelimit")
    with pytest.raises(ToolFailed, match=r"the web search failed: .*Ratelimit"):
        await search("kennels")


@pytest.mark.parametrize(
    ("provider", "missing"),
    [
        ("brave", "KENNEL_SEARCH_API_KEY"),
        ("tavily", "KENNEL_SEARCH_API_KEY"),
        ("searxng", "KENNEL_SEARXNG_URL"),
    ],
)
def test_a_provider_without_its_key_or_url_fails_at_start(provider: str, missing: str) -> None:
    with pytest.raises(ValidationError, match=f"KENNEL_SEARCH_PROVIDER={provider} needs {missing}"):
        Settings(search_provider=provider, search_api_key=None, searxng_url=None)
