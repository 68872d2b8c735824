"""`/freshet/ui` with auth on, in a real headless browser (Debian chromium driven by
Playwright), on a real `freshet serve` (issue 18, points 2 and 11).

Signed out, the page says auth is on, asks for the admin key and loads nothing; a wrong
key is refused and says so; the right one is kept in the tab's session storage and sent
as a bearer token on every call (never in a URL), and every view loads: cost (energy
sources beside joules, per-token charts on a log scale, "not ok" counted as the traces
count it), traces (filters, key, HTTP status), keys (spend against budgets). Signing out
forgets the key; a key the gateway later refuses sends the page back to the form.

With ``FRESHET_UI_DOCS_IMAGES=DIR`` the signed-in cost, traces and keys views are saved
there as PNGs (the screenshots in docs/ui.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request

from gateway.state.keys import new_key
from gateway.state.keys_sqlite import SQLiteKeyStore
from tests.support.browser import needs_chromium, open_watched
from tests.support.server import Server, running_server

ADMIN = "ui-admin-key-for-tests"
AUTH_ON = {"FRESHET_AUTH": "on", "FRESHET_ADMIN_KEY": ADMIN}
KEY_ITEM = "freshet.admin-key"
# What Chromium logs for each refused call; the only console errors these tests expect.
REFUSED = "the server responded with a status of 401"
CONFIG: dict[str, Any] = {
    "backends": [
        {
            "id": "gpu",
            "type": "deterministic",
            "model": "llama-3.1-8b",
            "knowledge_cutoff": "2024-12-01",
            "tokens_per_s": 800,
            "profile": {
                "kind": "gpu", "watts_idle": 100, "watts_active": 600, "capex_per_hour": 2.0,
                "prefill_tokens_per_s": 20000, "decode_tokens_per_s": 160,
            },
        },
        {
            "id": "cpu",
            "type": "deterministic",
            "model": "smollm2-135m",
            "knowledge_cutoff": "2024-06-01",
            "tokens_per_s": 400,
            "profile": {
                "kind": "cpu", "watts_idle": 1, "watts_active": 8, "capex_per_hour": 0.08,
                "prefill_tokens_per_s": 325, "decode_tokens_per_s": 125,
            },
        },
        {
            "id": "asic",
            "type": "asic-sim",
            "model": "llama-3.1-8b",
            "knowledge_cutoff": "2023-12-01",
            "time_scale": 0.01,
        },
        {
            "id": "flaky",
            "type": "deterministic",
            "model": "flaky-1b",
            "knowledge_cutoff": "2024-06-01",
            "fail_before_first": True,
        },
    ],
    "groups": {"auto": ["asic", "cpu", "gpu"]},
}  # fmt: skip

pytestmark = needs_chromium


async def _create_keys(data: Path) -> dict[str, str]:
    store = SQLiteKeyStore(data)
    secrets = {}
    for name, limits in (
        ("team-search", {"budget_usd": 0.01, "budget_joules": 400.0, "rpm": 60, "tpm": 20_000}),
        ("team-chat", {"budget_usd": 0.0005, "rpm": 10}),
        ("batch-jobs", {}),
    ):
        secret, key = new_key(name, **limits)  # type: ignore[arg-type]
        await store.add(key)
        secrets[name] = secret
    await store.aclose()
    return secrets


def _chat(server: Server, secret: str, body: dict[str, Any]) -> int:
    full = {"messages": [{"role": "user", "content": "tell me about rivers"}], "max_tokens": 24}
    request = urllib.request.Request(
        server.url + "/v1/chat/completions",
        data=json.dumps({**full, **body}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {secret}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _admin(server: Server, path: str) -> Any:
    request = urllib.request.Request(
        server.url + path, headers={"authorization": f"Bearer {ADMIN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    secrets = asyncio.run(_create_keys(tmp_path / "data"))
    with running_server(tmp_path, CONFIG, env=AUTH_ON) as server:
        yield server, secrets


def _traffic(server: Server, secrets: dict[str, str]) -> None:
    search, chat, batch = secrets["team-search"], secrets["team-chat"], secrets["batch-jobs"]
    for i in range(3):
        assert _chat(server, search, {"model": "auto", "max_tokens": 16 + 8 * i}) == 200
    fresh = {"freshness": {"min_knowledge_cutoff": "2024-03-01"}}
    assert _chat(server, search, {"model": "auto", **fresh}) == 200  # the CPU model
    newer = {"freshness": {"min_knowledge_cutoff": "2024-09-01"}}
    assert _chat(server, chat, {"model": "llama-3.1-8b", "max_tokens": 40, **newer}) == 200
    assert _chat(server, batch, {"model": "smollm2-135m", "stream": True}) == 200
    assert _chat(server, batch, {"model": "flaky-1b"}) >= 500  # reached a backend: a record
    assert _chat(server, chat, {"model": "no-such-model"}) == 404  # refused: no record
    late = {"freshness": {"min_knowledge_cutoff": "2030-01-01"}}
    assert _chat(server, search, {"model": "auto", **late}) == 422  # refused: no record


def _watch(page: Page) -> list[Request]:
    """Every request the page makes, to check where the key goes."""
    seen: list[Request] = []
    page.on("request", lambda r: seen.append(r))
    return seen


def _stored_key(page: Page) -> str | None:
    value: str | None = page.evaluate(f"() => sessionStorage.getItem({KEY_ITEM!r})")
    return value


def _unexpected(problems: list[str]) -> list[str]:
    return [p for p in problems if REFUSED not in p]


def _shoot(page: Page, path: str, full_page: bool = False) -> None:
    page.screenshot(path=path, full_page=full_page)
    assert Path(path).stat().st_size < 200_000, path  # small enough for the docs


def _sign_in(page: Page, key: str) -> None:
    page.fill("#signin-key", key)
    page.click("#signin-submit")


def test_signed_out_then_a_wrong_key_then_sign_in(
    gateway: tuple[Server, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    server, secrets = gateway
    _traffic(server, secrets)
    problems: list[str] = []
    page = open_watched(browser, server.url + "/freshet/ui", "body[data-session]", problems)
    seen = _watch(page)

    # Signed out: the page says auth is on, asks for the key and loads no data.
    assert page.locator("body").get_attribute("data-session") == "signed-out"
    assert page.locator("#signin").is_visible()
    assert "Auth is on" in page.locator("#signin").inner_text()
    assert "FRESHET_ADMIN_KEY" in page.locator("#signin").inner_text()
    assert page.locator("#nav").is_hidden()
    assert page.locator("#view-cost").is_hidden()
    assert page.locator("#signout").is_hidden()
    assert page.locator("#session-state").inner_text() == "auth on · signed out"
    assert page.locator("#signin-closed").is_hidden()  # the gateway has an admin key
    assert page.locator("body[data-cost-loaded]").count() == 0

    # A wrong key: refused, said so, not kept.
    _sign_in(page, "fk-not-the-admin-key")
    error = page.locator("#signin-error")
    error.wait_for(state="visible")
    assert "That key was refused" in error.inner_text()
    assert "admin key" in error.inner_text()
    assert _stored_key(page) is None
    assert page.locator("#signin").is_visible()
    assert page.locator("body").get_attribute("data-session") == "signed-out"

    # The right key: kept for the tab, the cost view loads with it.
    _sign_in(page, ADMIN)
    page.wait_for_selector("body[data-cost-loaded]", timeout=30_000)
    assert _stored_key(page) == ADMIN
    assert page.locator("#signin").is_hidden()
    assert page.locator("#signout").is_visible()
    assert "signed in" in page.locator("#session-state").inner_text()
    assert page.locator("#cost-error").is_hidden()
    data_calls = [r for r in seen if "/freshet/" in r.url and "/freshet/ui" not in r.url]
    assert data_calls
    for call in data_calls:
        assert ADMIN not in call.url  # never in a URL
        if (
            call.url.split("?")[0].endswith("/freshet/state")
            and call.headers.get("authorization") != f"Bearer {ADMIN}"
        ):
            continue  # the wrong key's try
        assert call.headers.get("authorization") == f"Bearer {ADMIN}", call.url

    # A reload keeps the tab signed in.
    page.reload()
    page.wait_for_selector("body[data-cost-loaded]", timeout=30_000)
    assert page.locator("#signin").is_hidden()

    # Signing out forgets the key and shows the form again, with no data in the page.
    page.click("#signout")
    page.wait_for_selector("body[data-session='signed-out']", timeout=30_000)
    assert _stored_key(page) is None
    assert page.locator("#signin").is_visible()
    assert page.locator("#cost-table tbody tr").count() == 0
    assert _unexpected(problems) == []


def test_signed_in_views_show_sources_log_scales_keys_and_traces(
    gateway: tuple[Server, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    server, secrets = gateway
    _traffic(server, secrets)
    problems: list[str] = []
    page = open_watched(browser, server.url + "/freshet/ui", "#signin-key", problems)
    _sign_in(page, ADMIN)
    page.wait_for_selector("body[data-cost-loaded]", timeout=30_000)
    shots = os.environ.get("FRESHET_UI_DOCS_IMAGES")
    if shots:  # a little narrower than the tests' page: small files for the docs
        page.set_viewport_size({"width": 1200, "height": 900})
        page.click("#cost-refresh")
        page.locator("#cost-status", has_text="updated").wait_for()

    # Every joule figure says how its joules were obtained.
    energy_card = page.locator("#cost-energy-source").inner_text()
    assert "simulated" in energy_card
    assert "modelled" in energy_card
    legend = page.eval_on_selector_all(
        "#chart-energy ul.legend li", "lis => lis.map(li => [li.dataset.series, li.textContent])"
    )
    shown = dict(legend)
    assert "simulated" in shown["asic"]
    assert "modelled" in shown["cpu"]
    notes = page.eval_on_selector_all(
        "#chart-j-per-token text.category-note", "ts => ts.map(t => t.textContent)"
    )
    assert "simulated" in notes
    sources = page.eval_on_selector_all(
        "#cost-table tbody tr",
        "trs => trs.map(tr => [tr.dataset.value, "
        "tr.querySelector('[data-field=energy_source]').textContent])",
    )
    assert dict(sources)["asic"] == "simulated"
    assert dict(sources)["gpu"] == "modelled"
    assert dict(sources)["flaky"] == "not metered"

    # The per-token charts are on a log scale: the ASIC's bars stay visible.
    for chart in ("chart-j-per-token", "chart-usd-per-mtok"):
        title = page.locator(f"#{chart} svg text.axis-title").first.text_content() or ""
        assert "log scale" in title
        heights = page.eval_on_selector_all(
            f"#{chart} g.series rect",
            "rs => rs.map(r => [r.parentNode.dataset.series, Number(r.dataset.value), "
            "r.getBBox().height])",
        )
        by_value = sorted(heights, key=lambda h: h[1])
        assert by_value[-1][1] / by_value[0][1] > 10, heights  # a tenfold difference at least
        assert by_value[0][2] > 0.15 * by_value[-1][2], heights  # and still a visible bar
        assert by_value[0][2] < by_value[-1][2]

    # Money reads in significant digits, never $0.0000...
    text = page.locator("#view-cost").inner_text()
    assert not re.search(r"\$0\.0000", text)

    # "Not ok" on Cost counts what the traces count as reached a backend.
    not_ok = int(page.locator("#cost-not-ok").get_attribute("data-not-ok") or "-1")
    breakdown = _admin(server, "/freshet/cost/breakdown?since=24h")
    assert not_ok == sum(r["requests"] for r in breakdown["rows"] if r["status"] != "ok") == 1
    if shots:
        _shoot(page, f"{shots}/ui-cost.png", full_page=True)

    page.click("#cost-not-ok-traces")  # to the traces, filtered to what is not ok
    page.wait_for_selector("body[data-traces-loaded]", timeout=30_000)
    counts = page.locator("#traces-counts")
    counts.wait_for()
    assert page.locator("#traces-status-filter").input_value() == "not_ok"
    assert counts.get_attribute("data-not-ok-recorded") == str(not_ok)
    assert counts.get_attribute("data-refused") == "2"
    statuses = page.eval_on_selector_all(
        "#traces-table tbody tr td[data-field=status]", "tds => tds.map(td => td.dataset.value)"
    )
    assert len(statuses) == 3
    assert "ok" not in statuses
    assert "as counted on Cost" in counts.inner_text()

    # Filters: by key, by backend; search; HTTP status and key in the list.
    page.click("#traces-clear")
    page.locator("#traces-status", has_text=re.compile("^9 traces")).wait_for(timeout=30_000)
    page.select_option("#traces-key", "team-search")
    page.locator("#traces-status", has_text=re.compile("^4 traces")).wait_for(timeout=30_000)
    rows = page.eval_on_selector_all(
        "#traces-table tbody tr",
        "trs => trs.map(tr => Object.fromEntries([...tr.cells].map("
        "td => [td.dataset.field, td.dataset.value])))",
    )
    assert {r["key"] for r in rows} == {"team-search"}
    assert {r["http_status"] for r in rows} == {"200"}
    page.select_option("#traces-key", "")
    page.select_option("#traces-backend", "asic")
    page.locator("#traces-status", has_text=re.compile("^3 traces")).wait_for(timeout=30_000)
    assert {r for r in page.eval_on_selector_all(
        "#traces-table td[data-field=energy_source]", "tds => tds.map(td => td.textContent)"
    )} == {"simulated"}  # fmt: skip
    page.select_option("#traces-backend", "")
    page.locator("#traces-status", has_text=re.compile("^9 traces")).wait_for(timeout=30_000)
    # The unknown model's name: a number such as 404 can also stand in a random trace id.
    page.fill("#traces-search", "no-such-model")
    page.locator("#traces-counts[data-shown='1']").wait_for(timeout=30_000)
    assert page.locator("#traces-table td[data-field=http_status]").inner_text() == "404"
    page.fill("#traces-search", "")
    page.locator("#traces-counts[data-shown='9']").wait_for(timeout=30_000)
    headers = page.eval_on_selector_all(
        "#traces-table thead th", "ths => ths.map(t => t.textContent)"
    )
    assert {"key", "HTTP", "energy source"} <= set(headers)
    if shots:  # with a trace that shows its spans
        page.locator("#traces-table tbody tr", has_text="asic").first.click()
        page.locator("#waterfall tbody tr", has_text="backend asic").wait_for()
        _shoot(page, f"{shots}/ui-traces.png")

    # Keys: spend today against each budget, never a secret.
    page.click("#nav a[data-view='keys']")
    page.wait_for_selector("body[data-keys-loaded]", timeout=30_000)
    usage = {k["name"]: k for k in _admin(server, "/freshet/keys/usage")["keys"]}
    keys = page.eval_on_selector_all(
        "#keys-table tbody tr",
        "trs => trs.map(tr => Object.assign(Object.fromEntries("
        "[...tr.cells].map(td => [td.dataset.field, [td.dataset.value, td.dataset.share, "
        "td.textContent]])), {name: tr.dataset.key}))",
    )
    assert {k["name"] for k in keys} == {"team-search", "team-chat", "batch-jobs"}
    for row in keys:
        expected = usage[row["name"]]
        assert float(row["usd"][0]) == pytest.approx(expected["today"]["usd"], rel=1e-12)
        share = expected["budget_usd_used"]
        if share is None:
            assert row["usd"][1] == ""
        else:
            assert float(row["usd"][1]) == pytest.approx(share, rel=1e-12)
        assert int(row["requests"][0]) == expected["today"]["requests"]
    search = next(k for k in keys if k["name"] == "team-search")
    assert " of $0.0100" in search["usd"][2]
    assert "of 60" in search["window_requests"][2]
    assert page.locator("#keys-table .meter").count() >= 4
    view = page.locator("#view-keys").inner_text()
    for secret in secrets.values():
        assert secret not in view
        assert secret not in page.content()
    if shots:
        _shoot(page, f"{shots}/ui-keys.png")
    assert _unexpected(problems) == []
    assert problems == []


def test_a_refused_key_sends_the_page_back_to_sign_in(
    gateway: tuple[Server, dict[str, str]], browser: Browser
) -> None:
    server, _ = gateway
    problems: list[str] = []
    page = open_watched(browser, server.url + "/freshet/ui#traces", "#signin-key", problems)
    # A key kept from before (the gateway's admin key changed since): refused on first use.
    page.evaluate(f"() => sessionStorage.setItem({KEY_ITEM!r}, 'an-old-admin-key')")
    page.reload()
    error = page.locator("#signin-error")
    error.wait_for(state="visible", timeout=30_000)
    assert "refused the admin key kept in this tab" in error.inner_text()
    assert _stored_key(page) is None
    assert page.locator("#view-traces").is_hidden()
    _sign_in(page, ADMIN)
    page.wait_for_selector("body[data-traces-loaded]", timeout=30_000)
    assert page.locator('#nav a[aria-current="page"]').inner_text() == "Traces"
    assert _unexpected(problems) == []


def test_csv_download_sends_the_key(
    gateway: tuple[Server, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    server, secrets = gateway
    _traffic(server, secrets)
    problems: list[str] = []
    page = open_watched(browser, server.url + "/freshet/ui", "#signin-key", problems)
    _sign_in(page, ADMIN)
    page.wait_for_selector("body[data-cost-loaded]", timeout=30_000)
    with page.expect_download() as info:
        page.click("#cost-csv")
    saved = tmp_path / "report.csv"
    info.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("backend,")
    assert any(line.startswith("asic,") for line in lines)
    assert problems == []
