"""`/freshet/ui` in a real headless browser (Debian chromium driven by Playwright).

A real `freshet serve` with deterministic backends serves some requests; the page must
load without console or page errors, draw one series per backend in every chart with the
backends' names in the legends, and show the same numbers as the JSON report.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import needs_chromium, open_watched
from tests.support.server import Server, running_server

CONFIG: dict[str, Any] = {
    "backends": [
        {
            "id": "gpu-a",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-gpu",
            "tokens_per_s": 4000,
            "profile": {"kind": "gpu", "watts_idle": 100, "watts_active": 400, "capex_per_hour": 2},
            "list_price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
        },
        {
            "id": "cpu-b",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-cpu",
            "tokens_per_s": 4000,
            "profile": {"watts_idle": 1, "watts_active": 6, "capex_per_hour": 0.08},
            "list_price": {"input_per_mtok": 0.2, "output_per_mtok": 0.6},
        },
        {
            "id": "asic-c",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-asic",
            "profile": {"kind": "asic", "watts_idle": 80, "watts_active": 250},
            "list_price": {"input_per_mtok": 0.05, "output_per_mtok": 0.1},
        },
    ],
    "groups": {},
}
BACKENDS = {"gpu-a", "cpu-b", "asic-c"}

pytestmark = needs_chromium


def _chat(server: Server, model: str, words: int) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": " ".join(["river"] * words)}],
        "max_tokens": 12,
    }
    request = urllib.request.Request(
        server.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, CONFIG) as server:
        yield server


def _open(browser: Browser, url: str, problems: list[str]) -> Page:
    return open_watched(browser, url, "body[data-cost-loaded]", problems)


def _series_names(page: Page, chart: str) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        f"#{chart} svg g.series", "gs => gs.map(g => g.dataset.series)"
    )
    return names


def _legend(page: Page, chart: str) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        f"#{chart} ul.legend li", "lis => lis.map(li => li.dataset.series)"
    )
    return names


def _assert_same(cell: str, value: float | None, field: str) -> None:
    """A cell's data-value (JavaScript's rendering of the JSON number) equals the number."""
    if value is None:
        assert cell == "", field
    else:
        assert float(cell) == pytest.approx(value, rel=1e-12, abs=0), field


def test_cost_page_draws_the_report(gateway: Server, browser: Browser, tmp_path: Path) -> None:
    for i in range(4):
        _chat(gateway, "m-gpu", 3 + i)
        _chat(gateway, "m-cpu", 5 + i)
    _chat(gateway, "m-asic", 2)
    status, body = gateway.get("/freshet/cost/report?group_by=backend&since=24h")
    assert status == 200
    report = json.loads(body)
    assert report["totals"]["requests"] == 9

    problems: list[str] = []
    page = _open(browser, gateway.url + "/freshet/ui", problems)
    sent: list[dict[str, str]] = []
    page.on("request", lambda r: sent.append(r.headers))
    assert page.title() == "Freshet"
    # Auth off: no sign-in, and the header says the gateway is open.
    assert page.locator("#signin").is_hidden()
    assert page.locator("#signout").is_hidden()
    assert page.locator("#session-state").inner_text().startswith("auth off")
    assert page.locator("#cost-empty").is_hidden()
    assert page.locator("#cost-error").is_hidden()
    assert page.locator('#nav a[aria-current="page"]').inner_text() == "Cost"

    # Over-time charts: one stacked series per backend; the legend names them.
    for chart in ("chart-cost", "chart-energy", "chart-j-per-token", "chart-usd-per-mtok"):
        has_data = page.locator(f"#{chart} svg").count() == 1
        if chart in ("chart-energy", "chart-j-per-token") and not has_data:
            # No energy plugin installed: the chart says so instead of drawing zeros.
            assert report["totals"]["joules"] in (None, 0.0)
            assert "No energy recorded" in page.locator(f"#{chart} .no-data").inner_text()
            continue
        assert has_data, chart
        assert set(_series_names(page, chart)) == BACKENDS, chart
        assert sorted(_legend(page, chart)) == sorted(BACKENDS), chart
        assert page.locator(f"#{chart} svg text.axis-title").count() >= 1
    bars = page.locator("#chart-cost svg g.series rect").count()
    assert bars >= len(BACKENDS)
    # Axis titles carry units.
    cost_axis = page.locator("#chart-cost svg text.axis-title").first.text_content() or ""
    assert cost_axis.startswith("cost per ")
    assert "$" in cost_axis
    # $/Mtok bars are the configured list prices (plus energy and capex, when metered):
    # the tallest output bar is gpu-a's.
    heights = page.eval_on_selector_all(
        "#chart-usd-per-mtok g.series rect[data-side=out]",
        "rs => rs.map(r => [r.parentNode.dataset.series, r.getBBox().height])",
    )
    assert max(heights, key=lambda pair: pair[1])[0] == "gpu-a"

    # The table shows the JSON report's values, row by row, and the totals.
    rows = page.eval_on_selector_all(
        "#cost-table tbody tr",
        "trs => trs.map(tr => Object.fromEntries([...tr.cells].map("
        "td => [td.dataset.field, td.dataset.value ?? td.textContent])))",
    )
    assert [r["value"] for r in rows] == [r["value"] for r in report["rows"]]
    for shown, row in zip(rows, report["rows"], strict=True):
        sources = shown.pop("energy_source")  # beside the joules, from the breakdown
        assert sources in ("modelled", "simulated", "not metered")
        assert set(shown) < set(row)
        for field, cell in shown.items():
            if field != "value":
                _assert_same(cell, row[field], field)
    totals = page.eval_on_selector_all(
        "#cost-table tfoot td", "tds => tds.map(td => [td.dataset.field, td.textContent])"
    )
    shown_totals = dict(totals)
    assert shown_totals["value"] == "total"
    assert shown_totals["requests"] == "9"
    tokens_in = report["totals"]["prompt_tokens"]
    assert page.locator("#cost-cards").inner_text().count(f"{tokens_in:,} in") == 1

    # How true the quotes were, per backend: what /freshet/backends says.
    quotes = page.eval_on_selector_all(
        "#quotes-table tbody tr",
        "trs => trs.map(tr => Object.fromEntries([...tr.cells].map("
        "td => [td.dataset.field, td.dataset.value ?? td.textContent])))",
    )
    shown_quotes = {q["value"]: q for q in quotes}
    assert set(shown_quotes) == BACKENDS
    for backend in json.loads(gateway.get("/freshet/backends")[1]):
        shown = shown_quotes[backend["id"]]
        assert int(shown["observed"]) == backend["quotes"]["observed"]
        _assert_same(shown["ttft_error_p90"], backend["quotes"]["ttft_error_p90"], "p90")
    assert shown_quotes["gpu-a"]["observed"] == "4"

    # The table follows "Table by"; the CSV link follows both controls.
    page.select_option("#cost-by", "model")
    # (Waiting with locators: the page's CSP forbids the eval behind wait_for_function.)
    page.locator("#cost-by-label", has_text=re.compile("^model$")).wait_for(timeout=10_000)
    models = page.eval_on_selector_all(
        "#cost-table tbody tr", "trs => trs.map(tr => tr.dataset.value)"
    )
    assert sorted(models) == ["m-asic", "m-cpu", "m-gpu"]
    assert "group_by=model" in (page.get_attribute("#cost-csv", "href") or "")

    assert sent
    assert all("authorization" not in headers for headers in sent)

    shot = tmp_path / "freshet-ui.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("FRESHET_UI_SCREENSHOT"):
        page.screenshot(path=os.environ["FRESHET_UI_SCREENSHOT"], full_page=True)
    assert problems == []


def test_empty_ledger_shows_the_empty_state(gateway: Server, browser: Browser) -> None:
    problems: list[str] = []
    page = _open(browser, gateway.url + "/freshet/ui", problems)
    assert page.locator("#cost-empty").is_visible()
    assert "No usage recorded" in page.locator("#cost-empty").inner_text()
    assert page.locator("#cost-content").is_hidden()
    assert problems == []


def test_page_is_self_contained(gateway: Server) -> None:
    with urllib.request.urlopen(gateway.url + "/freshet/ui", timeout=10) as resp:
        policy = resp.headers["content-security-policy"]
        html = resp.read().decode()
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    # The only URL in the page is SVG's namespace name, which is never fetched.
    assert re.findall(r"https?://[^\s\"'`]+", html) == ["http://www.w3.org/2000/svg"]
    assert "<script src" not in html
    assert 'rel="stylesheet"' not in html
