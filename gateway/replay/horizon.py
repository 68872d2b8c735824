"""The horizon: the same trace replayed as if it arrived in each month, and what a fleet
costs month by month.

Every deployment keeps its knowledge cutoff unless a schedule says otherwise, and every
request's freshness need is relative to its simulated date, so the share of traffic a
frozen model may serve shrinks month by month. Two schedules change a fleet over time:

- ``--refresh ID:EVERY:LAG`` (``gpu:3m:180d``): the backend's model is replaced every
  EVERY months by one whose cutoff is LAG before the replacement (a GPU can load the
  newest open model; an etched card cannot);
- ``--adapter ID:NAME:EVERY:LAG`` (``asic:news:3m:21d``): a LoRA adapter NAME-YYYY-MM is
  released every EVERY months with its cutoff LAG before its release; the newest
  ``lora_slots`` (4) are configured.

Money per month: the hardware (``capex_per_hour`` x the month's hours: a rented GPU, or a
bought one written off as ``capex_usd / life_years``), the energy (what the usage records
were charged, plus the idle energy no request carried, at the flat price and PUE) and the
list prices, with the trace's variable costs scaled from its window to the month's hours.
The cash view counts a purchase price (``capex_usd``) once, up front: the break-even
month of a fleet against a baseline is the first month its cumulative cash is no higher.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence

import msgspec
from msgspec import Struct

from gateway.replay.mix import days_of, months_of
from gateway.replay.traces import TraceRequest
from gateway.settings import Settings


class Refresh(Struct, kw_only=True, frozen=True):
    backend: str
    every_months: int
    lag_days: int


class AdapterPlan(Struct, kw_only=True, frozen=True):
    backend: str
    name: str
    every_months: int
    lag_days: int
    keep: int = 4


def parse_refresh(text: str) -> Refresh:
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"--refresh is ID:EVERY:LAG, e.g. gpu:3m:180d; got {text!r}")
    return Refresh(backend=parts[0], every_months=_every(parts[1]), lag_days=days_of(parts[2]))


def parse_adapter(text: str) -> AdapterPlan:
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError(f"--adapter is ID:NAME:EVERY:LAG, e.g. asic:news:3m:21d; got {text!r}")
    return AdapterPlan(
        backend=parts[0], name=parts[1], every_months=_every(parts[2]), lag_days=days_of(parts[3])
    )


def _every(text: str) -> int:
    months = months_of(text)
    if months < 1:
        raise ValueError(f"a schedule's period is at least a month, got {text!r}")
    return months


def add_months(date: dt.date, months: int) -> dt.date:
    year, month = divmod(date.month - 1 + months, 12)
    year += date.year
    day = min(date.day, calendar.monthrange(year, month + 1)[1])
    return dt.date(year, month + 1, day)


def month_settings(
    settings: Settings,
    start: dt.date,
    month: int,
    refresh: Sequence[Refresh] = (),
    adapters: Sequence[AdapterPlan] = (),
) -> Settings:
    """The fleet as it stands in ``month`` (0 = the start): refreshed models and the
    adapters released so far. A schedule applies to the backend with its id, if the fleet
    has one (give a backend its own id to schedule it in one fleet only)."""
    backends = []
    for config in settings.backends:
        for r in refresh:
            if r.backend == config.id:
                released = add_months(start, month // r.every_months * r.every_months)
                cutoff = released - dt.timedelta(days=r.lag_days)
                if config.knowledge_cutoff is None or cutoff > config.knowledge_cutoff:
                    config = msgspec.structs.replace(config, knowledge_cutoff=cutoff)
        extra = [
            {"name": f"{a.name}-{released:%Y-%m}", "knowledge_cutoff": cutoff.isoformat()}
            for a in adapters
            if a.backend == config.id
            for released, cutoff in _releases(a, start, month)[-a.keep :]
        ]
        if extra:
            config = msgspec.structs.replace(config, adapters=[*config.adapters, *extra])
        backends.append(config)
    return msgspec.structs.replace(settings, backends=tuple(backends))


def _releases(plan: AdapterPlan, start: dt.date, month: int) -> list[tuple[dt.date, dt.date]]:
    out = []
    for k in range(month // plan.every_months + 1):
        released = add_months(start, k * plan.every_months)
        out.append((released, released - dt.timedelta(days=plan.lag_days)))
    return out


def midnight(date: dt.date) -> float:
    return dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp()


def shifted(requests: Iterable[TraceRequest], day: dt.date | None) -> Iterator[TraceRequest]:
    """The trace moved by whole days so that its first day is ``day`` (times of day kept)."""
    if day is None:
        yield from requests
        return
    shift: float | None = None
    replace = msgspec.structs.replace
    for request in requests:
        if shift is None:
            shift = midnight(day) - (request.at - request.at % 86400)
        yield replace(request, at=request.at + shift)


def month_hours(start: dt.date, month: int) -> float:
    return (add_months(start, month + 1) - add_months(start, month)).days * 24.0


def break_even(cash: Sequence[float], baseline: Sequence[float]) -> tuple[int | None, int | None]:
    """When a fleet's cumulative cash first is no higher than the baseline's, and when it is
    higher again after that (the frozen model's savings can run out). Index 0 is what was
    paid up front, then the end of months 1, 2, ...; ``None``: not within the horizon."""
    even: int | None = None
    for month, (mine, theirs) in enumerate(zip(cash, baseline, strict=True)):
        cheaper = mine <= theirs + 1e-9
        if even is None and cheaper:
            even = month
        elif even is not None and not cheaper:
            return even, month
    return even, None


def first_below(shares: Sequence[float | None], level: float = 0.5) -> int | None:
    """The first month (1-based) whose share is below ``level``."""
    for month, share in enumerate(shares, start=1):
        if share is not None and share < level:
            return month
    return None
