"""Recording into prometheus_client's children for a fraction of their cost.

A finished request records four histogram observations and one or two counter
increments. prometheus_client's ``Histogram.observe`` walks the buckets in Python and
takes a lock for the sum and again for the bucket; ``Counter.inc`` takes one. In this
process every recording is made on the event loop's thread, and a scrape (the loop, or
the OTLP exporter's thread) reads each float whole under the GIL, so :func:`recorder`
writes the children's values directly: the bucket found by bisection, no lock. The
exposition is the library's own (a test holds the two recorders' output equal). Only the
library's in-process values (``MutexValue``) are written so; multiprocess mode, or a
library whose children look otherwise, keeps the library's own methods.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client.values import MutexValue


class HistogramRecorder:
    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:
        self._sum: MutexValue = child._sum
        self._buckets: list[MutexValue] = child._buckets
        self._bounds: list[float] = child._upper_bounds

    def observe(self, amount: float) -> None:
        if amount != amount:  # NaN: the library adds it to the sum and no bucket
            self._sum._value += amount
            return
        self._sum._value += amount
        self._buckets[bisect_left(self._bounds, amount)]._value += 1


class CounterRecorder:
    __slots__ = ("_child", "_value")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._value: MutexValue = child._value

    def inc(self, amount: float) -> None:
        if amount < 0:
            self._child.inc(amount)  # the library's error
        self._value._value += amount


def recorder(child: Any) -> Any:
    """A histogram's or counter's child, or a faster recorder writing into it."""
    sum_ = getattr(child, "_sum", None)
    buckets = getattr(child, "_buckets", None)
    bounds = getattr(child, "_upper_bounds", None)
    if sum_ is not None or buckets is not None:
        if (
            type(sum_) is MutexValue
            and isinstance(buckets, list)
            and isinstance(bounds, list)
            and len(buckets) == len(bounds)
            and all(type(b) is MutexValue for b in buckets)
        ):
            return HistogramRecorder(child)
        return child
    if type(getattr(child, "_value", None)) is MutexValue:
        return CounterRecorder(child)
    return child
