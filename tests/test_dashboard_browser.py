"""The dashboard in a real browser (Chromium through Playwright) against a real `kennel serve`
with the fake model: signing in and out, workers, live answers, reloads, cancelling, files,
schedules, the webhook log, other organizations, hostile model output and hostile sites."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import handinger
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from browser import launch, new_page, sign_in, snap
from conformance import ADA, EVE, Kennel, poll_task, running_kennel, upload
from fakellm import Drip, FakeLLM, Sleep, Text
from receiver import Receiver, serving_receiver

# Starting `kennel serve` and making three keys with the CLI takes a minute or more when the
# machine is busy, and the first test pays for it.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def kennel(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM) -> Iterator[Kennel]:
    folder = tmp_path_factory.mktemp("dashboard")
    with running_kennel(folder, llm, KENNEL_ALLOW_PRIVATE_NETWORKS="127.0.0.1/32") as found:
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, kennel: Kennel) -> Iterator[Page]:
    """A fresh browser profile (no cookies) signed in as Ada."""
    context, tab = new_page(browser, kennel.base_url)
    try:
        sign_in(tab, kennel.keys[ADA])
        yield tab
    finally:
        context.close()


def worker(client: handinger.Handinger, **fields: Any) -> Any:
    return client.workers.create(title=fields.pop("title", "Rex"), **fields)


def run_from_page(page: Page, worker_id: str, text: str) -> None:
    page.goto(f"/worker/{worker_id}")
    page.fill("textarea[name=input]", text)
    page.click("button:has-text('Run')")
    page.wait_for_url(f"**/worker/{worker_id}/task/**")


def wait_for_live_text(page: Page, piece: str, seconds: float = 15) -> None:
    """Until the live view shows `piece` (polled from here: the page's CSP forbids the string
    evaluation that `wait_for_function` needs)."""
    deadline = time.monotonic() + seconds
    while piece not in live_text(page):
        assert time.monotonic() < deadline, f"{piece!r} never appeared live"
        time.sleep(0.05)


def live_text(page: Page) -> str:
    return page.eval_on_selector_all(
        ".live .live-text", "els => els.map(e => e.textContent).join('')"
    )


def test_sign_in_lands_on_the_page_asked_for_and_sign_out_ends_it(
    browser: Browser, kennel: Kennel, ada: handinger.Handinger
) -> None:
    found = worker(ada, title="Landing")
    context, tab = new_page(browser, kennel.base_url)
    try:
        assert f"Dashboard: {kennel.base_url}/" in kennel.server.log.read_text()
        tab.goto(f"/worker/{found.id}")
        assert tab.is_visible("input[name=key]") and not tab.is_visible("text=Landing")
        snap(tab, "sign in")
        tab.fill("input[name=key]", "hdg_wrong")
        tab.click("button:has-text('Sign in')")
        assert tab.is_visible("text=not valid")
        tab.fill("input[name=key]", kennel.keys[ADA])
        tab.click("button:has-text('Sign in')")
        tab.wait_for_url(f"**/worker/{found.id}")
        assert tab.is_visible("h1:has-text('Landing')")
        cookie = next(c for c in context.cookies() if c["name"] == "kennel_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        tab.click("text=Sign out")
        tab.goto(f"/worker/{found.id}")
        assert tab.is_visible("input[name=key]")
    finally:
        context.close()


def test_create_a_worker_with_schema_checking_as_you_type_then_edit_it(page: Page) -> None:
    page.click("text=New worker")
    page.fill("#title", "Extractor")
    page.fill("#instructions", "Pull out the city.")
    page.fill("#output_schema", '{"type": "object", "properties": {')
    page.wait_for_selector("#schema-check .bad")
    assert "not valid JSON" in page.inner_text("#schema-check")
    page.fill("#output_schema", '{"type": "object", "properties": {"city": {"type": "string"}}}')
    page.wait_for_selector("#schema-check .good")
    snap(page, "new worker")
    page.check("input[value=private]")
    page.click("button:has-text('Create worker')")
    page.wait_for_selector("h1:has-text('Extractor')")
    assert page.is_visible("text=private")
    page.click("text=Edit")
    page.fill("#title", "City extractor")
    page.click("button:has-text('Save')")
    page.wait_for_selector("h1:has-text('City extractor')")
    page.goto("/?q=city")
    assert page.is_visible("a:has-text('City extractor')")
    snap(page, "workers")


def test_a_task_run_from_the_page_arrives_in_pieces(
    page: Page, llm: FakeLLM, ada: handinger.Handinger
) -> None:
    words = " ".join(f"word{n}" for n in range(12))
    llm.script("story", Drip(0.25, Text(f"**Once** {words} end.")))
    found = worker(ada, title="Storyteller")
    run_from_page(page, found.id, "tell me a story")
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not page.is_visible(".turn strong:has-text('Once')"):
        text = live_text(page)
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        time.sleep(0.05)
    assert len(seen) >= 3, seen  # several growing pieces, not one block
    assert all(later.startswith(earlier) for earlier, later in pairwise(seen))
    page.wait_for_selector(".turn .bubble.assistant:not(.live) >> text=word11 end.")
    assert not page.is_visible(".live")
    snap(page, "task")


def test_a_reload_mid_run_picks_the_answer_up_again(
    page: Page, llm: FakeLLM, ada: handinger.Handinger
) -> None:
    words = " ".join(f"piece{n}" for n in range(16))
    llm.script("long answer", Drip(0.25, Text(words)))
    found = worker(ada)
    run_from_page(page, found.id, "long answer please")
    wait_for_live_text(page, "piece2")
    page.reload()
    wait_for_live_text(page, "piece1")
    assert page.is_visible(".live")  # still running after the reload, shown live again
    page.wait_for_selector(".bubble.assistant:not(.live) >> text=piece15")
    assert page.inner_text(".bubble.assistant").count("piece3 ") == 1


def test_cancel_stops_the_running_turn(page: Page, llm: FakeLLM, ada: handinger.Handinger) -> None:
    llm.script("forever", Sleep(60, Text("never")))
    found = worker(ada)
    run_from_page(page, found.id, "work forever")
    page.click("button:has-text('Cancel')")
    page.wait_for_selector("text=Cancelled before it finished.")
    assert page.is_visible(".status-aborted") and not page.is_visible("button:has-text('Cancel')")


def test_the_urls_the_sdk_returns_open_in_the_browser(
    page: Page, kennel: Kennel, ada: handinger.Handinger, browser: Browser
) -> None:
    found = worker(ada, title="Linked")
    assert found.url == f"{kennel.base_url}/worker/{found.id}"
    result = upload(
        ada,
        {"input": "keep this file", "workerId": found.id},
        [("files", ("notes.txt", b"dog facts", "text/plain"))],
    )
    task = poll_task(ada, result.metadata["taskId"]).task
    page.goto(result.url)
    assert page.is_visible("h1:has-text('Linked')")
    page.goto(task.url)
    page.wait_for_selector("text=echo: keep this file")
    downloaded = page.context.request.get(result.files[0].url)
    assert downloaded.ok and downloaded.body() == b"dog facts"
    assert downloaded.headers["content-disposition"].startswith("attachment")
    # Signed out, a file link asks to sign in first, then downloads.
    context, stranger = new_page(browser, kennel.base_url)
    try:
        stranger.goto(task.url)
        assert stranger.is_visible("input[name=key]")
        assert context.request.get(
            result.files[0].url, headers={"accept": "text/html"}
        ).url.endswith("/signin?next=" + result.files[0].url.split(kennel.base_url, 1)[1])
    finally:
        context.close()


def test_upload_download_and_delete_files(page: Page, ada: handinger.Handinger) -> None:
    found = worker(ada)
    page.goto(f"/worker/{found.id}")
    page.set_input_files(
        "#files input[type=file]",
        files=[
            {"name": "report.html", "mimeType": "text/html", "buffer": b"<script>alert(1)</script>"}
        ],
    )
    page.click("#files button:has-text('Upload')")
    page.wait_for_selector("#files a:has-text('report.html')")
    with page.expect_download() as caught:
        page.click("#files a:has-text('report.html')")
    download = caught.value
    assert download.suggested_filename == "report.html"
    assert Path(download.path()).read_bytes() == b"<script>alert(1)</script>"
    page.click("#files button[aria-label='Delete report.html']")
    page.wait_for_selector("text=No files yet")


def test_schedules_add_run_now_history_and_delete(page: Page, ada: handinger.Handinger) -> None:
    found = worker(ada)
    page.goto(f"/worker/{found.id}")
    page.fill("#schedule-input", "morning news")
    page.select_option("#schedule-kind", "cron")
    page.fill("input[name=cron]", "0 9 * * 1-5")
    page.fill("input[name=timezone]", "Europe/Madrid")
    page.click("button:has-text('Add schedule')")
    page.wait_for_selector("#schedules code:has-text('0 9 * * 1-5')")
    assert page.is_visible("#schedules >> text=Europe/Madrid")
    page.click("#schedules button:has-text('Run now')")
    page.wait_for_url("**/task/**")
    page.wait_for_selector("text=echo: morning news")
    page.goto(f"/worker/{found.id}")
    page.click("#schedules a:has-text('History')")
    page.wait_for_selector("td:has-text('run now')")
    page.goto(f"/worker/{found.id}")
    page.click("#schedules button:has-text('delete')")
    page.wait_for_selector("#schedules >> text=No schedules.")


def test_the_webhook_token_and_its_delivery_log(
    page: Page, ada: handinger.Handinger, receiver: Receiver
) -> None:
    found = worker(ada)
    url = receiver.endpoint(503, then=[200])
    page.goto(f"/worker/{found.id}")
    page.fill("#webhook input[name=url]", url)
    page.click("#webhook button:has-text('Save')")
    token = page.inner_text("#token")
    assert token.startswith("whk_") and token == ada.workers.webhooks.retrieve(found.id).token
    page.click("text=Done")
    assert not page.is_visible(f"text={token}")
    ada.tasks.create(input="ping the hook", worker_id=found.id)
    receiver.wait_for(url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not page.is_visible("#webhook .status-error"):
        time.sleep(0.2)
        page.reload()
    assert page.is_visible("#webhook td:has-text('503')")
    snap(page, "worker")


def test_another_organization_gets_404_and_none_of_the_data(
    browser: Browser, kennel: Kennel, ada: handinger.Handinger
) -> None:
    found = worker(ada, title="Crown jewels")
    result = ada.tasks.create(input="the secret plan", worker_id=found.id)
    context, eve = new_page(browser, kennel.base_url)
    try:
        sign_in(eve, kennel.keys[EVE])
        task = ada.tasks.retrieve(result.metadata["taskId"]).task
        for url in (found.url, task.url):
            response = eve.goto(url)
            assert response is not None and response.status == 404
            assert "Crown jewels" not in eve.content() and "secret plan" not in eve.content()
    finally:
        context.close()


def test_hostile_model_output_stays_inert(
    page: Page, llm: FakeLLM, ada: handinger.Handinger
) -> None:
    hostile = (
        '<script>window.pwned = "script"</script> <img src=x onerror="window.pwned=\'img\'"> '
        "[click](javascript:window.pwned='link') **done**"
    )
    llm.script("hostile", Drip(0.05, Text(hostile)))
    found = worker(ada, title="<img src=x onerror=\"window.pwned='title'\">")
    run_from_page(page, found.id, "hostile please")
    wait_for_live_text(page, "img")
    page.wait_for_selector(".bubble.assistant:not(.live) strong:has-text('done')")
    assert page.evaluate("window.pwned") is None
    assert "<script>window.pwned" in page.inner_text(".bubble.assistant")
    assert page.locator(".bubble.assistant img").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    page.goto("/")
    assert page.evaluate("window.pwned") is None


class _Hostile(BaseHTTPRequestHandler):
    """Another site (same host, another port): a page whose form posts to Kennel on load."""

    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form id="f" method="post" action="{self.target}/workers/new">'
            '<input name="title" value="Planted"><input name="visibility" value="public">'
            '</form><script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_form_posted_from_another_origin_does_nothing(
    page: Page, kennel: Kennel, ada: handinger.Handinger
) -> None:
    handler = type("Hostile", (_Hostile,), {"target": kennel.base_url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with page.expect_response(f"{kennel.base_url}/workers/new") as caught:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        assert caught.value.status == 403
    finally:
        server.shutdown()
        server.server_close()
    titles = [w["title"] for w in ada.get("/api/workers", cast_to=object)["data"]]
    assert "Planted" not in titles


def test_create_a_key_then_revoke_it_and_its_session_ends(
    browser: Browser, kennel: Kennel, page: Page, ada: handinger.Handinger
) -> None:
    ada.tasks.create(input="use some credits", worker_id=worker(ada, title="Spender").id)
    page.goto("/organization")
    page.click("button:has-text('Create key')")
    key = page.inner_text("#new-key")
    assert key.startswith("hdg_")
    snap(page, "new key")
    page.click("text=Done")
    assert page.is_visible(f"code:has-text('{key[:12]}')") and not page.is_visible(f"text={key}")
    snap(page, "organization")
    context, second = new_page(browser, kennel.base_url)
    try:
        sign_in(second, key, "/organization")
        row = second.locator("tr", has_text="this session")
        row.locator("summary:has-text('Revoke')").click()
        row.locator("button:has-text('Revoke for good')").click()
        second.wait_for_selector("input[name=key]")  # signed out: the key is gone
        second.goto("/")
        assert second.is_visible("input[name=key]")
    finally:
        context.close()
    page.reload()
    assert page.is_visible("text=Sign out")  # Ada's other session is untouched
    with pytest.raises(handinger.AuthenticationError):
        handinger.Handinger(api_key=key, base_url=kennel.base_url, max_retries=0).workers.create()
