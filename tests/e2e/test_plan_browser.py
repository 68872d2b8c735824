"""The "Plan" view of `/freshet/ui` in a real headless browser: a report of `freshet replay`
(its --json output, and its --html report) picked from a file is drawn in the page, with the
report's fleets, backends and months; a file that is not a report says so. Nothing is sent
to the gateway: the page makes no request after it loaded."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import needs_chromium, open_watched
from tests.support.server import FRESHET, Server, running_server

pytestmark = needs_chromium

ROOT = Path(__file__).parents[2]
AZURE = ROOT / "tests" / "fixtures" / "traces" / "azure"
FLEET = """
backends:
  - id: gpu
    type: vllm
    urls: [http://gpu.invalid:8000]
    model: llama-3.1-8b
    knowledge_cutoff: 2025-06-01
  - {id: asic, type: asic-sim, model: llama-3.1-8b, knowledge_cutoff: 2023-12-01}
groups:
  auto: [gpu, asic]
"""
GPU_ONLY = FLEET.replace("  auto: [gpu, asic]", "  auto: [gpu]")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Server]:
    with running_server(
        tmp_path,
        {"backends": [{"id": "d", "type": "deterministic", "knowledge_cutoff": "unknown"}]},
    ) as s:
        yield s


@pytest.fixture
def reports(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A horizon replay of the Azure slice through two fleets: its JSON and its HTML."""
    (tmp_path / "card.yaml").write_text(FLEET)
    (tmp_path / "gpu.yaml").write_text(GPU_ONLY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env["FRESHET_TRACE_DIR"] = str(AZURE)
    env["FRESHET_DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run(
        [str(FRESHET), "replay", "--trace", "azure-conv", "--config", "gpu.yaml",
         "--config", "card.yaml", "--freshness", "70%:none,30%:365d", "--start", "2026-01-01",
         "--horizon", "6m", "--json", "--html", "plan.html", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (tmp_path / "plan.json").write_text(result.stdout)
    return tmp_path / "plan.json", tmp_path / "plan.html", json.loads(result.stdout)


def _texts(page: Page, selector: str) -> list[str]:
    found: list[str] = page.eval_on_selector_all(selector, "es => es.map(e => e.textContent)")
    return found


def _check_drawn(page: Page, report: dict[str, Any]) -> None:
    fleets = [f["fleet"] for f in report["fleets"]]
    assert fleets == ["gpu", "card"]
    assert _texts(page, "#plan-fleets tbody tr td:first-child") == fleets
    for fleet in report["fleets"]:
        rows = _texts(page, f"#plan-backends-{fleet['fleet']} tbody tr td:first-child")
        assert rows == [b["id"] for b in fleet["backends"]]
    # One bar series per backend and the refusals in the shares chart, named in the legend.
    legend = _texts(page, "#plan-shares ul.legend li")
    assert legend == ["gpu", "asic", "refused"]
    assert page.locator("#plan-usd svg rect").count() == 2
    # The horizon: a verdict per fleet, a line per fleet, one row per month.
    assert _texts(page, "#plan-verdicts li b") == fleets
    assert page.locator("#plan-cash svg polyline").count() == 2
    for horizon in report["horizon"]:
        months = _texts(page, f"#plan-months-{horizon['fleet']} tbody tr td:first-child")
        assert months == [str(m["month"]) for m in horizon["months"]]
    summary = page.text_content("#plan-summary") or ""
    assert f"{report['trace']['requests']:,} requests" in summary


def test_plan_view_draws_a_replay_report(
    gateway: Server, browser: Browser, reports: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    as_json, as_html, report = reports
    problems: list[str] = []
    page = open_watched(browser, gateway.url + "/freshet/ui#plan", "#plan-file", problems)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    assert page.is_visible("#plan-empty")
    page.set_input_files("#plan-file", str(as_json))
    page.wait_for_selector("body[data-plan-loaded]")
    _check_drawn(page, report)
    # The HTML report carries the same JSON: the same drawing.
    page.evaluate("delete document.body.dataset.planLoaded")
    page.set_input_files("#plan-file", str(as_html))
    page.wait_for_selector("body[data-plan-loaded]")
    _check_drawn(page, report)
    # Anything else is refused in words, and the page stays usable.
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    page.set_input_files("#plan-file", str(bad))
    page.wait_for_selector("#plan-error:not([hidden])")
    assert "not a freshet replay report" in (page.text_content("#plan-error") or "")
    assert requests == []  # the file never left the browser
    assert problems == []
