"""The horizon: schedules, the frozen model's shrinking share, money per month, break-even."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest

from gateway.flow.fleet import Fleet
from gateway.plugins import Plugins
from gateway.replay.horizon import (
    add_months,
    break_even,
    first_below,
    month_settings,
    parse_adapter,
    parse_refresh,
)
from gateway.replay.mix import parse_mixes
from gateway.replay.plan import Plan, replay
from gateway.settings import Settings, load_settings

AZURE = Path(__file__).parents[2] / "fixtures" / "traces" / "azure"
START = dt.date(2026, 1, 1)

CARD_AND_GPU = """
backends:
  - id: asic
    type: asic-sim
    model: llama-3.1-8b
    knowledge_cutoff: 2023-12-01
  - id: gpu
    type: vllm
    urls: [http://gpu.invalid:8000]
    model: llama-3.1-8b
    knowledge_cutoff: 2025-06-01
    profile: {capex_per_hour: 2.0}
groups:
  auto: [asic, gpu]
"""


def fleet(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Settings:
    path = tmp_path / name
    path.write_text(text)
    return load_settings(str(path), env={})


def test_refresh_and_adapter_schedules(tmp_path: Path) -> None:
    settings = fleet(tmp_path, CARD_AND_GPU)
    refresh = [parse_refresh("gpu:3m:180d")]
    adapters = [parse_adapter("asic:news:3m:21d")]
    cutoffs = []
    for month in (0, 2, 3, 7):
        current = month_settings(settings, START, month, refresh, adapters)
        gpu = next(c for c in current.backends if c.id == "gpu")
        cutoffs.append(gpu.knowledge_cutoff)
    released = [START, START, add_months(START, 3), add_months(START, 6)]
    assert cutoffs == [max(dt.date(2025, 6, 1), r - dt.timedelta(days=180)) for r in released]
    current = month_settings(settings, START, 7, refresh, adapters)
    card = Fleet(current, Plugins()).backends["asic"]
    assert [(d.adapter, d.knowledge_cutoff) for d in card.deployments] == [
        (None, dt.date(2023, 12, 1)),
        ("news-2026-01", dt.date(2025, 12, 11)),
        ("news-2026-04", dt.date(2026, 3, 11)),
        ("news-2026-07", dt.date(2026, 6, 10)),
    ]
    with pytest.raises(ValueError, match="ID:NAME:EVERY:LAG"):
        parse_adapter("asic:3m:21d")


def test_break_even_arithmetic() -> None:
    # A card bought for $100 that saves $30 a month against a fleet paying $40 a month.
    card = [100.0 + 10.0 * m for m in range(6)]  # 100, 110, 120, 130, 140, 150
    gpus = [40.0 * m for m in range(6)]  # 0, 40, 80, 120, 160, 200
    assert break_even(card, gpus) == (4, None)
    assert break_even(gpus, gpus) == (0, None)
    assert break_even([100.0, 200.0], [0.0, 50.0]) == (None, None)
    # Cheaper for a while, then the frozen model's savings run out.
    assert break_even([10.0, 20.0, 45.0, 80.0], [0.0, 25.0, 50.0, 75.0]) == (1, 3)
    assert first_below([0.9, 0.6, 0.5, 0.49, 0.2]) == 4
    assert first_below([0.9, None, 0.7]) is None


@pytest.mark.asyncio
async def test_the_etched_share_shrinks_month_by_month(tmp_path: Path) -> None:
    """Requests that tolerate one to four years of staleness: as the simulated date moves
    on, fewer of them can take the card's December 2023 cutoff."""
    settings = fleet(tmp_path, CARD_AND_GPU)
    plan = Plan(
        traces=["azure-code", "azure-conv"],
        data_dir=str(AZURE),
        mixes=parse_mixes(["100%:365d..1460d"]),
        start=dt.date(2025, 6, 1),
        horizon=12,
    )
    report = await replay(plan, [("card", settings)], Plugins())
    [h] = report.horizon
    shares = [m.etched_share or 0.0 for m in h.months]
    assert all(m.etched_share is not None for m in h.months)
    assert all(a >= b for a, b in itertools.pairwise(shares))
    assert shares[0] - shares[-1] > 0.1
    first = h.months[0].class_etched_share
    assert (first["azure-conv"] or 0.0) > (
        first["azure-code"] or 0.0
    )  # conversation prompts are shorter: more fit the card
    assert h.months[0].refused_freshness == 0


@pytest.mark.asyncio
async def test_a_month_costs_its_hardware_energy_and_list_prices(tmp_path: Path) -> None:
    """One 100 W backend bought for $8,760 over one year ($1/h), two requests an hour
    apart: January (744 h) costs $744 of hardware and 744 h x 0.1 kW x $0.10 of energy."""
    settings = fleet(
        tmp_path,
        """
backends:
  - id: box
    type: deterministic
    knowledge_cutoff: 2025-01-01
    tokens_per_s: 1
    profile: {watts_idle: 100, watts_active: 100, capex_usd: 8760, life_years: 1}
prices: {kwh_usd: 0.10, pue: 1.0}
""",
    )
    trace = tmp_path / "two.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,1\n3600,10,1\n")
    plan = Plan(traces=[str(trace)], start=START, horizon=2, model="box")
    report = await replay(plan, [("box", settings)], Plugins())
    [h] = report.horizon
    jan, feb = h.months
    assert h.upfront_usd == 8760.0
    assert jan.usd_hardware == pytest.approx(744.0)
    assert jan.usd_energy == pytest.approx(7.44)
    assert jan.usd_list == 0.0
    assert jan.usd_cash == pytest.approx(8760.0 + 7.44)  # bought up front: no rent
    assert feb.usd_hardware == pytest.approx(672.0)
    assert feb.usd_cumulative == pytest.approx(744.0 + 7.44 + 672.0 + 6.72)
    assert report.fleets[0].served == 2
