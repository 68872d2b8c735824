"""Streaming aggregates of a replay: counts, and latency percentiles from log-spaced
histograms (1 % wide buckets, so a percentile is within 0.5 % of the exact one). Memory is
a fixed number of counters whatever the trace's length: no request is kept.

Money, energy and tokens are not summed here: they come from the usage records, through
the same report code as ``freshet cost report`` (:mod:`gateway.ledger.reports`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from msgspec import Struct

_RATIO = 1.01
_SCALE = 1.0 / math.log(_RATIO)
_LOW = 1e-6  # seconds; anything shorter counts as this
_OFFSET = int(math.log(_LOW) * _SCALE)
_BUCKETS = int(math.log(1e7) * _SCALE) - _OFFSET + 2  # up to ~116 days


class Histogram:
    """Counts of values (seconds) in 1 %-wide buckets; exact count, sum, min and max."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        i = int(math.log(value) * _SCALE) - _OFFSET if value > _LOW else 0
        self.counts[min(max(i, 0), _BUCKETS - 1)] += 1

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), from the bucket it falls in (its geometric middle,
        clamped to the exact min and max)."""
        if not self.count:
            return None
        rank = q * (self.count - 1)
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen > rank:
                middle = math.exp((i + _OFFSET + 0.5) / _SCALE)
                return min(max(middle, self.min), self.max)
        return self.max

    def summary(self) -> Latency:
        return Latency(
            p50=self.percentile(0.50),
            p95=self.percentile(0.95),
            p99=self.percentile(0.99),
            mean=self.total / self.count if self.count else None,
            max=self.max if self.count else None,
        )


class Latency(Struct, kw_only=True):
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None


REFUSALS = ("freshness", "context", "capacity", "other")


class BackendStats:
    __slots__ = ("e2e", "failed", "output_tokens", "requests", "ttft")

    def __init__(self) -> None:
        self.requests = 0
        self.output_tokens = 0
        self.failed = 0  # refused it before the first byte (the request fell back)
        self.ttft = Histogram()
        self.e2e = Histogram()


class ClassStats:
    __slots__ = ("etched", "frozen", "refused", "requests", "served")

    def __init__(self) -> None:
        self.requests = 0
        self.served = 0
        self.refused = 0
        self.etched = 0  # served by an etched card (kind asic), adapters included
        self.frozen = 0  # of which by its base model, without an adapter


class RunStats:
    """One fleet over one trace (one month of a horizon)."""

    def __init__(self, backends: Iterable[str]) -> None:
        self.requests = 0
        self.served = 0
        self.fallbacks = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.ttft = Histogram()
        self.e2e = Histogram()
        self.backends = {b: BackendStats() for b in backends}
        self.classes: dict[str, ClassStats] = {}
        self.first_at: float | None = None  # simulated seconds
        self.last_at = 0.0
        self.last_end = 0.0

    def arrived(self, cls: str, at: float) -> ClassStats:
        self.requests += 1
        if self.first_at is None:
            self.first_at = at
        self.last_at = at
        stats = self.classes.get(cls)
        if stats is None:
            stats = self.classes[cls] = ClassStats()
        stats.requests += 1
        return stats

    def served_by(
        self,
        stats: ClassStats,
        backend: str,
        etched: bool,
        adapter: bool,
        ttft: float | None,
        duration: float,
        output_tokens: int,
        end: float,
    ) -> None:
        self.served += 1
        stats.served += 1
        if etched:
            stats.etched += 1
            if not adapter:
                stats.frozen += 1
        b = self.backends[backend]
        b.requests += 1
        b.output_tokens += output_tokens
        if ttft is not None:
            self.ttft.add(ttft)
            b.ttft.add(ttft)
        self.e2e.add(duration)
        b.e2e.add(duration)
        if end > self.last_end:
            self.last_end = end

    def refused_for(self, stats: ClassStats, reason: str) -> None:
        self.refused[reason] += 1
        stats.refused += 1

    @property
    def window_s(self) -> float:
        """From the first arrival to the last arrival or end, whichever is later."""
        if self.first_at is None:
            return 0.0
        return max(self.last_at, self.last_end) - self.first_at
