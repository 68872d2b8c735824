"""Freshness mixes per trace class, and the replay's small option parsers."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.protocol import Freshness
from gateway.replay.mix import (
    apply_mixes,
    days_of,
    months_of,
    parse_mix,
    parse_mixes,
    parse_rate,
)
from gateway.replay.traces import TraceRequest


def requests(n: int, cls: str = "c", freshness: Freshness | None = None) -> list[TraceRequest]:
    return [
        TraceRequest(at=float(i), prompt_tokens=1, output_tokens=1, cls=cls, freshness=freshness)
        for i in range(n)
    ]


def test_a_mix_draws_its_shares_the_same_way_every_time() -> None:
    mixes = parse_mixes(["70%:none,20%:365d,10%:90d"])
    drawn = [r.freshness for r in apply_mixes(requests(20_000), mixes, seed=1)]
    counts = Counter((f.max_staleness_days if f else "x") for f in drawn)
    assert counts[None] == pytest.approx(14_000, rel=0.03)
    assert counts[365] == pytest.approx(4_000, rel=0.06)
    assert counts[90] == pytest.approx(2_000, rel=0.1)
    again = [r.freshness for r in apply_mixes(requests(20_000), mixes, seed=1)]
    assert again == drawn
    other = [r.freshness for r in apply_mixes(requests(20_000), mixes, seed=2)]
    assert other != drawn


def test_each_class_has_its_own_mix_and_a_row_keeps_its_own_need() -> None:
    mixes = parse_mixes(["azure-code=100%:90d", "*=100%:none"])
    code = list(apply_mixes(requests(3, "azure-code"), mixes))
    conv = list(apply_mixes(requests(3, "azure-conv"), mixes))
    own = list(apply_mixes(requests(3, "azure-code", Freshness(max_staleness_days=7)), mixes))
    assert {r.freshness.max_staleness_days for r in code if r.freshness} == {90}
    assert all(r.freshness == Freshness() for r in conv)
    assert all(r.freshness == Freshness(max_staleness_days=7) for r in own)
    unmixed = list(apply_mixes(requests(2, "x"), parse_mixes(["azure-code=100%:90d"])))
    assert all(r.freshness is None for r in unmixed)


def test_a_range_of_staleness_is_drawn_uniformly() -> None:
    drawn = [
        r.freshness.max_staleness_days
        for r in apply_mixes(requests(10_000), {"*": parse_mix("100%:365d..1825d")})
        if r.freshness and r.freshness.max_staleness_days is not None
    ]
    assert len(drawn) == 10_000
    assert min(drawn) >= 365
    assert max(drawn) <= 1825
    assert sum(drawn) / len(drawn) == pytest.approx(1095, rel=0.03)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("70%:none,20%:365d", "add up to 90 %"),
        ("70:none,30%:90d", "is not SHARE%:NEED"),
        ("100%:soon", "a freshness need is none, Nd"),
        ("100%:900d..100d", "a range of days goes up"),
    ],
)
def test_a_bad_mix_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_mix(text)


def test_option_parsers() -> None:
    assert parse_rate("3x") == 3.0
    assert parse_rate("0.5") == 0.5
    with pytest.raises(ValueError, match="above 0"):
        parse_rate("0x")
    assert months_of("24m") == 24
    assert months_of("2y") == 24
    with pytest.raises(ValueError, match="months or years"):
        months_of("30d")
    assert days_of("21d") == 21
    assert days_of("3w") == 21
