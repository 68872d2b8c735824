"""The recorders write into prometheus_client's children what the library's own
``observe``/``inc`` write: the exposition of the two is the same for any values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from gateway.telemetry.recorders import CounterRecorder, HistogramRecorder, recorder

BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 10.0, 100.0, math.inf)
_amounts = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([b for b in BUCKETS if b != math.inf]),  # exactly on a bound
    st.integers(0, 10_000).map(float),
)


def _exposition(values: list[float], counts: list[float], fast: bool) -> bytes:
    registry = CollectorRegistry()
    hist = Histogram("h", "h", ["a"], registry=registry, buckets=BUCKETS).labels("x")
    count = Counter("c", "c", ["a"], registry=registry).labels("x")
    h = recorder(hist) if fast else hist
    c = recorder(count) if fast else count
    if fast:
        assert isinstance(h, HistogramRecorder)
        assert isinstance(c, CounterRecorder)
    for v in values:
        h.observe(v)
    for v in counts:
        c.inc(v)
    return b"\n".join(
        line for line in generate_latest(registry).splitlines() if b"_created" not in line
    )


@given(st.lists(_amounts, max_size=40), st.lists(st.floats(0, 1e9), max_size=10))
def test_the_exposition_is_the_library_s(values: list[float], counts: list[float]) -> None:
    assert _exposition(values, counts, fast=True) == _exposition(values, counts, fast=False)


def test_a_negative_increment_is_the_library_s_error() -> None:
    registry = CollectorRegistry()
    c = recorder(Counter("c", "c", ["a"], registry=registry).labels("x"))
    with pytest.raises(ValueError, match="negative"):
        c.inc(-1.0)


def test_anything_else_keeps_the_library_s_methods() -> None:
    class Other:
        _sum = object()
        _buckets: list[object] = []
        _upper_bounds: list[float] = []

    other = Other()
    assert recorder(other) is other
