"""Freshness needs for traces that carry none: a mix such as ``70%:none,20%:365d,10%:90d``,
per trace class (``azure-code`` and ``azure-conv`` need different things), and the small
parsers of the replay's options (``3x``, ``24m``, ``21d``).

A share's need is ``none``, a staleness (``365d``), a date (``2025-01-01``), or a range of
staleness drawn uniformly per request (``365d..1825d``: requests that tolerate anything
from one to five years), so that a frozen model's share shrinks smoothly over a horizon
rather than in steps.
"""

from __future__ import annotations

import bisect
import random
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping

import msgspec
from msgspec import Struct

from gateway.protocol import Freshness
from gateway.replay.traces import TraceRequest, parse_need

_SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*:\s*(\S+)\s*$")
_RANGE = re.compile(r"^(\d+)d\.\.(\d+)d$")
_PERIOD = re.compile(r"^(\d+)\s*([dwmy])$")


class Mix(Struct, kw_only=True, frozen=True):
    """Shares of freshness needs, e.g. 70 % none, 20 % within 365 days, 10 % within 90."""

    text: str
    shares: tuple[tuple[float, str], ...]  # (percent, need as written)

    def needs(self) -> tuple[list[float], list[list[Freshness]]]:
        """Cumulative shares, and for each share the needs to draw from (one, or a range)."""
        total = sum(p for p, _ in self.shares)
        bounds: list[float] = []
        needs: list[list[Freshness]] = []
        acc = 0.0
        for percent, need in self.shares:
            acc += percent / total
            bounds.append(acc)
            needs.append(_choices(need))
        bounds[-1] = 1.0
        return bounds, needs


def _choices(need: str) -> list[Freshness]:
    span = _RANGE.match(need.strip().lower())
    if span is None:
        return [parse_need(need)]
    lo, hi = int(span.group(1)), int(span.group(2))
    if hi < lo:
        raise ValueError(f"a range of days goes up: {need!r}")
    return [Freshness(max_staleness_days=d) for d in range(lo, hi + 1)]


def parse_mix(text: str) -> Mix:
    """``70%:none,20%:365d,10%:90d``: shares that add up to 100 %."""
    shares: list[tuple[float, str]] = []
    for part in text.split(","):
        match = _SHARE.match(part)
        if not match:
            raise ValueError(f"{part.strip()!r} is not SHARE%:NEED (e.g. 20%:365d)")
        percent, need = float(match.group(1)), match.group(2)
        _choices(need)  # raises with the reason
        shares.append((percent, need))
    total = sum(p for p, _ in shares)
    if abs(total - 100.0) > 1e-6:
        raise ValueError(f"the shares add up to {total:g} %, not 100 %")
    return Mix(text=text, shares=tuple(shares))


def parse_mixes(values: Iterable[str]) -> dict[str, Mix]:
    """``--freshness [CLASS=]MIX`` options: a mix per trace class, ``*`` for the others."""
    mixes: dict[str, Mix] = {}
    for value in values:
        cls, sep, text = value.partition("=")
        if not sep:
            cls, text = "*", value
        mixes[cls.strip()] = parse_mix(text)
    return mixes


def apply_mixes(
    requests: Iterable[TraceRequest], mixes: Mapping[str, Mix], seed: int = 0
) -> Iterator[TraceRequest]:
    """Each request without a need of its own gets one drawn from its class's mix (else the
    ``*`` mix), the same draw for the same request on every replay with the same seed."""
    if not mixes:
        yield from requests
        return
    tables = {cls: mix.needs() for cls, mix in mixes.items()}
    draws: dict[str, tuple[random.Random, list[float], list[list[Freshness]]] | None] = {}
    replace = msgspec.structs.replace
    for request in requests:
        if request.freshness is not None:
            yield request
            continue
        cls = request.cls
        if cls not in draws:
            table = tables.get(cls) or tables.get("*")
            draws[cls] = (
                (random.Random(seed * 1_000_003 + zlib.crc32(cls.encode())), *table)
                if table
                else None
            )
        found = draws[cls]
        if found is None:
            yield request
            continue
        rng, bounds, needs = found
        choices = needs[bisect.bisect_right(bounds, rng.random())]
        need = choices[0] if len(choices) == 1 else choices[int(rng.random() * len(choices))]
        yield replace(request, freshness=need)


def parse_rate(text: str) -> float:
    """``3x``, ``0.5x`` or ``3``: how many times the trace's traffic."""
    value = text.strip().lower().removesuffix("x")
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(f"a rate is a factor such as 3x or 0.5x, got {text!r}") from None
    if not 0 < rate < 1e6:
        raise ValueError(f"a rate must be above 0, got {text!r}")
    return rate


def parse_period(text: str) -> tuple[int, str]:
    """``24m`` -> (24, 'm'); units d (days), w (weeks), m (months), y (years)."""
    match = _PERIOD.match(text.strip().lower())
    if not match:
        raise ValueError(f"a period is a count and a unit (d, w, m, y), e.g. 24m; got {text!r}")
    return int(match.group(1)), match.group(2)


def months_of(text: str) -> int:
    count, unit = parse_period(text)
    if unit not in ("m", "y"):
        raise ValueError(f"give months or years (e.g. 24m, 2y), got {text!r}")
    return count * 12 if unit == "y" else count


def days_of(text: str) -> int:
    count, unit = parse_period(text)
    return count * {"d": 1, "w": 7, "m": 30, "y": 365}[unit]
