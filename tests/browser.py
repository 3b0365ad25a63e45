"""Debian's Chromium driven by Playwright, for the dashboard's browser tests.

Never `playwright install`: the browser is the system's `/usr/bin/chromium` (`make test`
installs it with apt-get when it is missing). With `KENNEL_SCREENSHOTS=/some/dir` set, `snap`
saves each main page at desktop width in light and at phone width in dark, for a reviewer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, Playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def new_page(browser: Browser, base_url: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    context.set_default_timeout(15_000)
    return context, context.new_page()


def sign_in(page: Page, key: str, path: str = "/") -> None:
    page.goto(path)
    page.fill("input[name=key]", key)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("text=Sign out")


def snap(page: Page, name: str) -> None:
    """Screenshots of the page as it is now, when KENNEL_SCREENSHOTS names a folder."""
    folder = os.environ.get("KENNEL_SCREENSHOTS")
    if not folder:
        return
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    page.screenshot(path=str(target / f"{slug}-desktop-light.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(target / f"{slug}-phone-dark.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(target / f"{slug}-desktop-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")
