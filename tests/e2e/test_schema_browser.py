"""``/schema`` in a real headless browser with no way out (#18 point 9): every request that
does not go to the gateway is aborted, and the page must still render the API (its title,
its operations) without a console error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Route

from tests.support.browser import needs_chromium
from tests.support.server import Server, running_server

CONFIG: dict[str, Any] = {
    "backends": [
        {"id": "det", "type": "deterministic", "model": "det", "knowledge_cutoff": "2024-06-01"},
    ],
    "groups": {"auto": ["det"]},
}

pytestmark = needs_chromium


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, CONFIG) as server:
        yield server


def test_the_schema_page_renders_with_no_network_but_the_gateway(
    gateway: Server, browser: Browser
) -> None:
    problems: list[str] = []
    elsewhere: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    def only_the_gateway(route: Route) -> None:
        url = route.request.url
        if url.startswith((gateway.url + "/", "data:")):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    page.route("**/*", only_the_gateway)
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
    loaded: list[str] = []
    page.on("response", lambda r: loaded.append(f"{r.status} {r.url}"))

    page.goto(gateway.url + "/schema")
    title = page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert title is not None
    assert "Freshet" in title.inner_text()
    assert page.title() == "Freshet"
    # The API is there: the generation endpoints among the operations.
    page.wait_for_selector(".opblock", timeout=30_000)
    paths = page.eval_on_selector_all(
        ".opblock .opblock-summary-path", "els => els.map(e => e.textContent.trim())"
    )
    assert "/v1/chat/completions" in [p.replace("\u200b", "") for p in paths], paths
    assert elsewhere == []
    assert problems == []
    # The viewer's files came from the gateway, each with 200.
    assets = [line for line in loaded if "/schema/assets/" in line]
    assert len(assets) >= 3, loaded
    assert all(line.startswith("200 ") for line in assets), assets
