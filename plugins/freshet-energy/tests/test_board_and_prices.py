"""Splitting a board's energy between concurrent requests, and turning joules into dollars."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from freshet_energy.board import BoardAccount, Share
from freshet_energy.counters import ModelledCounter
from freshet_energy.power import PowerCurve
from freshet_energy.prices import Prices, Tariff, dollars

from gateway.plugin_api import HardwareProfile, ListPrice

PROFILE = HardwareProfile(
    kind="gpu",
    watts_idle=100,
    watts_active=400,
    max_concurrency=4,
    prefill_tokens_per_s=1000,
    decode_tokens_per_s=100,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _board(idle: str = "overhead") -> tuple[BoardAccount, ModelledCounter, Clock]:
    clock = Clock()
    counter = ModelledCounter(PowerCurve(PROFILE).watts, clock)
    return BoardAccount(counter, PROFILE, clock, idle), counter, clock  # type: ignore[arg-type]


def test_concurrent_requests_split_energy_by_work_and_conserve_it() -> None:
    board, counter, clock = _board()
    clock.t = 10.0  # 10 s idle before anything runs
    a, b = Share(100.0), Share(0.0)
    board.begin_share(a)
    board.begin_share(b)  # same instant
    clock.t = 12.0
    a.tokens, b.tokens = 100, 300  # b generated three times as much
    board.end(a)
    clock.t = 13.0
    b.tokens = 400
    board.end(b)
    clock.t = 20.0
    board.advance()
    total = counter.read()
    # Idle 10 s at 100 W, 2 s at P(2) = 250 W, 1 s at P(1) = 175 W, idle 7 s.
    assert total == pytest.approx(1000 + 500 + 175 + 700)
    ja, jb = a.joules_in + a.joules_out, b.joules_in + b.joules_out
    assert ja + jb + board.idle_joules == pytest.approx(total)
    # First 2 s: work a = 100 prompt x 1 ms + 100 x 10 ms = 1.1 s; b = 300 x 10 ms = 3 s.
    assert ja == pytest.approx(500 * 1.1 / 4.1)
    assert a.joules_in == pytest.approx(500 * 0.1 / 4.1)
    assert jb == pytest.approx(500 * 3.0 / 4.1 + 175)
    assert a.busy_s + b.busy_s == pytest.approx(3.0)


def test_idle_attribute_mode_carries_idle_energy_to_the_next_requests() -> None:
    board, _, clock = _board("attribute")
    clock.t = 5.0  # 500 J of idle
    share = Share(0.0)
    board.begin_share(share)
    clock.t = 6.0
    share.tokens = 10
    board.end(share)
    assert board.idle_joules == 0
    assert share.joules_out == pytest.approx(500 + 175)


def test_requests_with_no_visible_work_share_evenly() -> None:
    board, _, clock = _board()
    a, b = Share(0.0), Share(0.0)
    board.begin_share(a)
    board.begin_share(b)
    clock.t = 1.0
    board.end(a)
    board.end(b)
    assert a.joules_out == pytest.approx(b.joules_out) == pytest.approx(125)


def test_tariff_windows_by_local_hour_including_past_midnight() -> None:
    prices = msgspec.convert(
        {
            "kwh_usd": 0.10,
            "timezone": "UTC",
            "tariffs": [
                {"start": "17:00", "end": "21:00", "kwh_usd": 0.30},
                {"start": "22:00", "end": "06:00", "kwh_usd": 0.05},
            ],
        },
        Prices,
    )

    def at(hour: int) -> float:
        return dt.datetime(2026, 11, 23, hour, 30, tzinfo=dt.UTC).timestamp()

    assert [prices.kwh_at(at(h)) for h in (12, 18, 23, 3, 21)] == [0.10, 0.30, 0.05, 0.05, 0.10]
    assert Tariff(start="22:00", end="06:00", kwh_usd=1).covers(dt.time(0, 1))
    with pytest.raises(msgspec.ValidationError, match="tariffs"):
        msgspec.convert({"tariffs": [{"start": "25:00", "end": "1:00", "kwh_usd": 1}]}, Prices)


def test_dollars_energy_capex_and_list_price() -> None:
    d = dollars(
        Prices(kwh_usd=0.10, pue=1.5),
        joules=3.6e6,  # 1 kWh
        busy_s=1800,
        pue=None,
        capex_per_hour=2.0,
        list_price=ListPrice(input_per_mtok=1.0, output_per_mtok=4.0),
        prompt_tokens=1_000_000,
        completion_tokens=500_000,
        at=0.0,
    )
    assert d.energy == pytest.approx(0.15)
    assert d.capex == pytest.approx(1.0)
    assert (d.list_in, d.list_out) == (pytest.approx(1.0), pytest.approx(2.0))
