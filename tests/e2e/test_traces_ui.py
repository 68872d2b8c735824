"""The "Traces" view of `/freshet/ui` in a real headless browser (Debian chromium driven by
Playwright), on a real `freshet serve` with no exporter: the list shows the traces kept in
memory with the same figures as `/freshet/traces`, and a trace opens as a waterfall of its
spans whose attributes show on a click."""

from __future__ import annotations

import json
import os
import re
import urllib.error
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
            # The cheapest, so tried first; it fails before its first token.
            "id": "flaky",
            "type": "deterministic",
            "model": "m-shared",
            "knowledge_cutoff": "2024-06-01",
            "fail_before_first": True,
        },
        {
            "id": "gpu-a",
            "type": "deterministic",
            "model": "m-shared",
            "knowledge_cutoff": "2025-01-01",
            "tokens_per_s": 2000,
            "profile": {"kind": "gpu", "watts_idle": 100, "watts_active": 400},
            "list_price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
        },
        {
            "id": "stale",
            "type": "deterministic",
            "model": "m-old",
            "knowledge_cutoff": "2023-01-01",
        },
    ],
    "groups": {"auto": ["flaky", "gpu-a", "stale"]},
}

pytestmark = needs_chromium


def _post(server: Server, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(
        server.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, CONFIG) as server:
        yield server


def _open(browser: Browser, url: str, problems: list[str]) -> Page:
    return open_watched(browser, url, "body[data-traces-loaded]", problems)


def _api(server: Server, path: str) -> Any:
    status, body = server.get(path)
    assert status == 200, body
    return json.loads(body)


def test_traces_view_lists_and_opens_traces(
    gateway: Server, browser: Browser, tmp_path: Path
) -> None:
    chat = {"messages": [{"role": "user", "content": "tell me about rivers"}], "max_tokens": 6}
    assert _post(gateway, {"model": "auto", **chat}) == 200
    assert _post(gateway, {"model": "m-old", **chat, "stream": True}) == 200
    assert _post(gateway, {"model": "no-such-model", **chat}) == 404
    assert (
        _post(
            gateway,
            {"model": "auto", **chat, "freshness": {"min_knowledge_cutoff": "2024-01-01"}},
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        )
        == 200
    )
    listed = _api(gateway, "/freshet/traces")
    assert len(listed) == 4

    problems: list[str] = []
    page = _open(browser, gateway.url + "/freshet/ui#traces", problems)
    assert page.locator('#nav a[aria-current="page"]').inner_text() == "Traces"
    assert page.locator("#view-cost").is_hidden()
    assert page.locator("#traces-empty").is_hidden()

    # The list: one row per trace, newest first, with the API's figures.
    rows = page.eval_on_selector_all(
        "#traces-table tbody tr",
        "trs => trs.map(tr => Object.assign({trace_id: tr.dataset.trace}, Object.fromEntries("
        "[...tr.cells].map(td => [td.dataset.field, td.dataset.value]))))",
    )
    assert [r["trace_id"] for r in rows] == [t["trace_id"] for t in listed]
    assert rows[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    for shown, trace in zip(rows, listed, strict=True):
        for field in ("model", "backend", "status", "input_tokens", "output_tokens"):
            expected = trace[field]
            assert shown[field] == ("" if expected is None else str(expected)), field
        for field in ("joules", "usd", "duration_ms"):
            if trace[field] is None:
                assert shown[field] == ""
            else:
                assert float(shown[field]) == pytest.approx(trace[field], rel=1e-12)
    statuses = [r["status"] for r in rows]
    assert statuses.count("error") == 1
    assert page.locator("#traces-table td.status-error").count() == 1
    headers = page.eval_on_selector_all(
        "#traces-table thead th", "ths => ths.map(t => t.textContent)"
    )
    assert headers == [
        "time (UTC)", "model", "backend", "key", "status", "HTTP", "tokens in", "tokens out",
        "TTFT (ms)", "duration (ms)", "energy (J)", "energy source", "cost",
    ]  # fmt: skip
    assert sorted(r["http_status"] for r in rows) == ["200", "200", "200", "404"]

    # The newest trace opens by itself: the server span, then route and both backends,
    # the one that failed in red.
    page.locator("body[data-trace-shown='4bf92f3577b34da6a3ce929d0e0e4736']").wait_for()
    spans = page.eval_on_selector_all(
        "#waterfall tbody tr",
        "trs => trs.map(tr => [tr.cells[0].textContent, Number(tr.dataset.depth)])",
    )
    assert spans[0] == ["chat auto", 0]
    assert sorted(spans[1:]) == [["backend flaky", 1], ["backend gpu-a", 1], ["route", 1]]
    assert page.locator("#waterfall rect.bar").count() == 4
    assert page.locator("#waterfall rect.bar.status-error").count() == 1
    assert page.locator("#waterfall line.event").count() == 1  # first token
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in page.locator("#trace-title").inner_text()
    # The server span's attributes show first; a click shows another span's.
    attributes = page.locator("#span-attributes")
    assert "gen_ai.usage.output_tokens" in attributes.inner_text()
    assert "freshet.energy_joules" in attributes.inner_text()
    page.locator("#waterfall tbody tr", has_text="route").click()
    page.locator("#span-title", has_text=re.compile("^route")).wait_for()
    dropped = attributes.locator("tr[data-key='freshet.route.dropped'] td").inner_text()
    assert dropped == "stale: freshness(cutoff 2023-01-01)"
    if os.environ.get("FRESHET_TRACES_SCREENSHOT"):
        page.screenshot(path=os.environ["FRESHET_TRACES_SCREENSHOT"], full_page=True)

    # Another trace: the 404 is one span, an error, with its type.
    error_id = next(t["trace_id"] for t in listed if t["status"] == "error")
    page.locator(f"#traces-table tr[data-trace='{error_id}']").click()
    page.locator(f"body[data-trace-shown='{error_id}']").wait_for()
    assert page.locator("#waterfall tbody tr").count() == 1
    assert "model_not_found" in page.locator("#trace-meta").inner_text()
    error_type = attributes.locator("tr[data-key='error.type'] td").inner_text()
    assert error_type == "model_not_found"

    # Refresh keeps the chosen trace and picks up new ones.
    assert _post(gateway, {"model": "m-old", **chat}) == 200
    page.click("#traces-refresh")
    page.locator("#traces-status", has_text=re.compile("^5 traces")).wait_for()
    assert page.locator(f"#traces-table tr.selected[data-trace='{error_id}']").count() == 1

    shot = tmp_path / "freshet-traces.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert problems == []


def test_no_traces_yet_shows_the_empty_state(gateway: Server, browser: Browser) -> None:
    problems: list[str] = []
    page = _open(browser, gateway.url + "/freshet/ui#traces", problems)
    assert page.locator("#traces-empty").is_visible()
    assert "No traces yet" in page.locator("#traces-empty").inner_text()
    assert page.locator("#traces-content").is_hidden()
    # The cost view is one click away, and still loads.
    page.click("#nav a[data-view='cost']")
    page.wait_for_selector("body[data-cost-loaded]", timeout=15_000)
    assert page.locator("#view-traces").is_hidden()
    assert problems == []
