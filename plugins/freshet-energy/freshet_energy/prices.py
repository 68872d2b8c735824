"""Electricity prices (with tariff windows by hour of day) and the dollar arithmetic."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgspec import Meta, Struct, field

from freshet_energy.board import IdleMode
from gateway.plugin_api import ListPrice


class Tariff(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``kwh_usd`` applies from ``start`` to ``end`` (``HH:MM``, local to ``timezone``);
    a window may wrap midnight (22:00 to 06:00)."""

    start: str
    end: str
    kwh_usd: Annotated[float, Meta(ge=0)]

    def __post_init__(self) -> None:
        for value in (self.start, self.end):
            try:
                dt.time.fromisoformat(value)
            except ValueError:  # -> a config error naming the key
                raise ValueError(f"not a time of day (HH:MM): {value!r}") from None

    def covers(self, at: dt.time) -> bool:
        start, end = dt.time.fromisoformat(self.start), dt.time.fromisoformat(self.end)
        if start <= end:
            return start <= at < end
        return at >= start or at < end


class Prices(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The config's ``prices:`` section. Defaults: US commercial electricity (EIA 2025)
    and the Uptime Institute's average PUE (data/profiles-sources.md)."""

    kwh_usd: Annotated[float, Meta(ge=0)] = 0.12
    pue: Annotated[float, Meta(ge=1)] = 1.58  # facility power over IT power: 1 at best
    tariffs: tuple[Tariff, ...] = ()
    timezone: str = "UTC"
    idle: IdleMode = "overhead"
    policy: Literal["full", "marginal"] = "full"  # default quote policy (marginal: energy)
    groups: dict[str, str] = field(default_factory=dict)  # per-group policy

    def __post_init__(self) -> None:
        # Checked at load: an unknown zone would otherwise fail every request it prices.
        zone(self.timezone)

    def kwh_at(self, at: float) -> float:
        if not self.tariffs:
            return self.kwh_usd
        local = dt.datetime.fromtimestamp(at, zone(self.timezone)).time()
        for tariff in self.tariffs:
            if tariff.covers(local):
                return tariff.kwh_usd
        return self.kwh_usd


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError (a config error) when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, ImportError, OSError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: an IANA name such as UTC or Europe/Paris "
            f"({type(exc).__name__}: {exc})"
        ) from None


class Dollars(Struct, kw_only=True):
    energy: float
    capex: float
    list_in: float
    list_out: float


def dollars(
    prices: Prices,
    *,
    joules: float,
    busy_s: float,
    pue: float | None,
    capex_per_hour: float,
    list_price: ListPrice,
    prompt_tokens: int,
    completion_tokens: int,
    at: float,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Dollars:
    """``E * PUE * $/kWh / 3.6e6`` + ``capex/h / 3600 * busy share`` + list prices (cache
    reads and writes, parts of ``prompt_tokens``, at their own list prices)."""
    list_in, list_out = list_price.usd(
        prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens
    )
    return Dollars(
        energy=joules * (pue if pue is not None else prices.pue) * prices.kwh_at(at) / 3.6e6,
        capex=capex_per_hour / 3600.0 * busy_s,
        list_in=list_in,
        list_out=list_out,
    )
