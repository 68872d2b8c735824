"""A real headless browser for UI tests: Debian's chromium driven by Playwright.

Playwright's own browser download is never used (it cannot work here); the page is
watched for console errors and warnings, page errors, failed requests, and any request
that leaves 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"
)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_watched(browser: Browser, url: str, ready: str, problems: list[str]) -> Page:
    """Open ``url``, record every problem into ``problems``, wait for the ``ready`` selector."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on(
        "request",
        lambda r: (
            None
            if r.url.startswith(("http://127.0.0.1", "data:"))
            else problems.append(f"off-host request: {r.url}")
        ),
    )
    # A busy CI machine (the whole suite on 2 cores) can take seconds to lay out a page:
    # every wait gets 30 s, none of which a healthy run comes near.
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector(ready, timeout=30_000)
    return page
