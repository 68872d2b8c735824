"""The report: text side by side, JSON, and a self-contained HTML page with charts."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import msgspec
import pytest

from gateway.plugins import Plugins
from gateway.replay.html import to_html
from gateway.replay.mix import parse_mixes
from gateway.replay.plan import Plan, replay
from gateway.replay.report import ReplayReport, to_text
from gateway.settings import load_settings

AZURE = Path(__file__).parents[2] / "fixtures" / "traces" / "azure"

GPUS = """
backends:
  - id: gpu
    type: vllm
    urls: [http://gpu1.invalid:8000, http://gpu2.invalid:8000]
    model: llama-3.1-8b
    knowledge_cutoff: 2025-06-01
    profile: {capex_per_hour: 4.7}
groups:
  auto: [gpu]
"""
CARD = """
backends:
  - id: gpu
    type: vllm
    urls: [http://gpu1.invalid:8000]
    model: llama-3.1-8b
    knowledge_cutoff: 2025-06-01
    profile: {capex_per_hour: 2.35}
  - id: asic
    type: asic-sim
    model: llama-3.1-8b
    knowledge_cutoff: 2023-12-01
    profile: {capex_usd: 10000, life_years: 3}
groups:
  auto: [gpu, asic]
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReplayReport:
    import asyncio

    tmp = tmp_path_factory.mktemp("fleets")
    fleets = []
    for name, text in (("gpus", GPUS), ("card", CARD)):
        (tmp / f"{name}.yaml").write_text(text)
        fleets.append((name, load_settings(str(tmp / f"{name}.yaml"), env={})))
    plan = Plan(
        traces=["azure-code", "azure-conv"],
        data_dir=str(AZURE),
        mixes=parse_mixes(["azure-code=50%:none,50%:365d..1095d", "azure-conv=100%:none"]),
        start=dt.date(2026, 1, 1),
        horizon=18,
        by="model",
    )
    return asyncio.run(replay(plan, fleets, Plugins()))


def test_the_report_compares_fleets_and_says_when_the_card_pays(report: ReplayReport) -> None:
    gpus, card = report.horizon
    assert report.baseline == "gpus"
    assert card.upfront_usd == 10_000
    assert card.break_even_month is not None
    assert card.break_even_month > 0
    month = card.months[card.break_even_month - 1]
    assert month.usd_cash <= gpus.months[card.break_even_month - 1].usd_cash
    before = card.months[card.break_even_month - 2] if card.break_even_month > 1 else None
    if before is not None:
        assert before.usd_cash > gpus.months[card.break_even_month - 2].usd_cash
    text = to_text(report)
    assert f"breaks even against gpus in month {card.break_even_month}" in text
    assert "gpus: the baseline" in text
    assert "Splitwise" in text  # the trace's citation
    assert "usage records by model" in text


def test_json_round_trips(report: ReplayReport) -> None:
    data = msgspec.json.encode(report)
    again = msgspec.json.decode(data, type=ReplayReport)
    assert again.fleets[0].requests == 600
    assert again.horizon[1].months[0].etched_share == report.horizon[1].months[0].etched_share


def test_the_html_report_is_self_contained(report: ReplayReport) -> None:
    page = to_html(report)
    assert page.count("<svg") >= 5
    assert "Cumulative cost" in page
    assert "Etched card&#x27;s share" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)  # nothing fetched
    assert "<script>" not in page
    data = re.search(r'<script type="application/json" id="report">(.*?)</script>', page, re.S)
    assert data is not None
    decoded = msgspec.json.decode(data.group(1).replace("<\\/", "</"))
    assert decoded["baseline"] == "gpus"
