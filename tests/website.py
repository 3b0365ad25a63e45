"""A small website on 127.0.0.1 for the web tools' tests, served by uvicorn from a thread.

Pages (HTML, PDF, text, JSON, an image), redirect chains, an open redirect, an oversized and a
slow answer, and fake Brave, Tavily and SearXNG search APIs in their real JSON shapes. Every
request is recorded in `requests`, so tests can check what the tools sent.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
SLOW_SECONDS = 5.0
BIG_BYTES = 256 * 1024

ARTICLE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Kennel field guide</title></head>
<body><nav>Home | Shop | Login</nav>
<article><h1>Kennel field guide</h1>
<p>A kennel is a structure or shelter for dogs. Working kennels house sled teams, hounds and
guard dogs; boarding kennels look after pets while their owners travel.</p>
<p>The word comes from the Anglo-Norman <a href="https://example.com/kenil">kenil</a>, itself
from the Latin canis. Modern kennels are heated, ventilated and cleaned every day.</p>
<ul><li>Sled teams</li><li>Hound packs</li></ul>
</article><footer>Copyright Kennel Club</footer></body></html>"""

# No article for trafilatura to find: every word sits in page furniture it prunes.
FURNITURE_ONLY = """<!doctype html>
<html><head><title>Only furniture</title><script>var tracking = 1;</script></head>
<body><footer>Opening hours: nine to five</footer><aside>Closed on Sundays</aside>
</body></html>"""

# Pages that name themselves in different places (or nowhere), by path under /titled/.
TITLED = {
    "title-and-heading": "<html><head><title>Feeding guide | Kennel Club</title></head>"
    "<body><h1>Feeding</h1><p>Twice a day.</p></body></html>",
    "open-graph": '<html><head><title>  </title><meta property="og:title" '
    'content="Sled dogs &amp; their kennels"></head><body><h1>Sled</h1></body></html>',
    "headings": "<html><body><svg><title>icon</title></svg><h2>Menu</h2>"
    "<h1>Hound <em>packs</em></h1><p>Ten hounds.</p></body></html>",
    "lower-heading": "<html><body><nav>Home</nav><h3>Opening hours</h3><p>Nine to five.</p>"
    "</body></html>",
    "untitled": "<html><body><p>Just a paragraph about kennels.</p></body></html>",
    "hostile": "<html><head><title>\n\t Kennel\u202e\u200b  guide\x07"
    + " woof" * 1000
    + "</title></head><body><p>Text.</p></body></html>",
}

NOTES = "Plain notes: feed the dogs at 7:00 and 18:00.\n"
PDF_TEXT = "Kibble rations per dog"
PDF_TITLE = "Feeding schedule"


@dataclass(frozen=True)
class Recorded:
    """One request the site received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


def tiny_pdf(text: str, title: str) -> bytes:
    """A one-page PDF showing `text`, with `title` in its document information."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


class LocalSite:
    """Serves the site on a free loopback port; `url(path)` names a page on it."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.base_url = ""
        self.port = 0
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def start(self) -> LocalSite:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{HOST}:{self.port}"
        config = uvicorn.Config(
            self._app(), log_config=None, access_log=False, lifespan="off", ws="none"
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="website", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local website did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        self._server.should_exit = True
        self._thread.join(START_TIMEOUT)
        self._server = self._thread = None

    def _app(self) -> Starlette:
        pdf = tiny_pdf(PDF_TEXT, PDF_TITLE)
        pages = {
            "/article.html": (ARTICLE.encode(), "text/html; charset=utf-8"),
            "/furniture.html": (FURNITURE_ONLY.encode(), "text/html"),
            "/notes.txt": (NOTES.encode(), "text/plain; charset=utf-8"),
            "/data.json": (b'{"dogs": 3}', "application/json"),
            "/doc.pdf": (pdf, "application/pdf"),
            "/untyped": (pdf, ""),
            "/image.png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png"),
            "/big.txt": (b"woof " * (BIG_BYTES // 5), "text/plain"),
        }
        for name, html in TITLED.items():
            pages[f"/titled/{name}"] = (html.encode(), "text/html; charset=utf-8")

        async def page(request: Request) -> Response:
            body, media_type = pages[request.url.path]
            return Response(body, headers={"content-type": media_type} if media_type else None)

        async def hop(request: Request) -> Response:
            left = int(request.path_params["left"])
            target = "/article.html" if left == 0 else f"/hop/{left - 1}"
            return RedirectResponse(target, status_code=302)

        async def redirect(request: Request) -> Response:
            return RedirectResponse(request.query_params["to"], status_code=307)

        async def status(request: Request) -> Response:
            return Response("nope", status_code=int(request.path_params["code"]))

        async def slow(request: Request) -> Response:
            deadline = time.monotonic() + SLOW_SECONDS
            while time.monotonic() < deadline and not self._stopping.is_set():
                await asyncio.sleep(0.05)
            return Response("finally", media_type="text/plain")

        async def search(request: Request) -> Response:
            body = await request.body()
            self.requests.append(
                Recorded(
                    request.method,
                    request.url.path,
                    dict(request.query_params),
                    dict(request.headers),
                    body,
                )
            )
            return JSONResponse(SEARCH_ANSWERS[request.url.path])

        routes = [Route(path, page) for path in pages]
        routes += [
            Route("/hop/{left:int}", hop),
            Route("/redirect", redirect),
            Route("/status/{code:int}", status),
            Route("/slow", slow),
            Route("/brave/web/search", search),
            Route("/tavily/search", search, methods=["POST"]),
            Route("/searxng/search", search),
        ]
        return Starlette(routes=routes)


# Trimmed answers in each API's documented shape, with the fields a client must ignore.
SEARCH_ANSWERS = {
    "/brave/web/search": {
        "type": "search",
        "query": {"original": "kennels"},
        "web": {
            "type": "search",
            "results": [
                {
                    "type": "search_result",
                    "title": "Brave kennel one",
                    "url": "https://one.example/kennels",
                    "description": "The <strong>first</strong> kennel.",
                    "language": "en",
                },
                {
                    "type": "search_result",
                    "title": "Brave kennel two",
                    "url": "https://two.example/kennels",
                    "description": "The second kennel.",
                },
            ],
        },
    },
    "/tavily/search": {
        "query": "kennels",
        "answer": None,
        "images": [],
        "results": [
            {
                "title": "Tavily kennel",
                "url": "https://tavily.example/kennel",
                "content": "A kennel found by Tavily.",
                "score": 0.93,
                "raw_content": None,
            }
        ],
        "response_time": 0.42,
    },
    "/searxng/search": {
        "query": "kennels",
        "number_of_results": 0,
        "results": [
            {
                "url": "https://searx.example/kennel",
                "title": "SearXNG kennel",
                "content": "A kennel found by SearXNG.",
                "engine": "duckduckgo",
                "engines": ["duckduckgo"],
                "score": 1.0,
                "category": "general",
            },
            {"url": "https://searx.example/second", "title": "Second", "content": ""},
        ],
        "answers": [],
        "suggestions": [],
        "unresponsive_engines": [],
    },
}
