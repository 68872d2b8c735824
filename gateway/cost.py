"""Quote and meter interfaces: what a request is expected to cost, and what it did cost.

A *cost model* (registered by a plugin through ``register_cost_models``; the default is
``energy`` from ``freshet-energy``) hands out one :class:`BackendCost` per backend. The
gateway asks it for a :class:`Quote` before sending (routing) and opens a
:class:`Metering` for each request that reaches the backend; the metering's ``end``
returns the request's real :class:`Costing`.

Joules come from *energy meters* (registered through ``register_energy_meters``): a
:data:`MeterFactory` builds an :class:`EnergyMeter` for a backend from its ``energy:``
section (:class:`EnergySettings`). The cost model decides which meter measures which
backend.

Without any cost plugin the :class:`ListPriceOnly` model applies: no joules, and dollars
only from configured list prices per token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from msgspec import Struct, field

from gateway.backend import (
    Backend,
    BackendConfig,
    BackendStatus,
    BackendUsage,
    EnergySource,
    convert,
)


class RequestShape(Struct, kw_only=True, frozen=True):
    """What the router knows of a request before sending it."""

    prompt_tokens: int
    output_tokens: int


# Made for every candidate of every request and never part of a reference cycle:
# untracked by the garbage collector, which keeps its pauses out of the router's tail.
class Quote(Struct, kw_only=True, frozen=True, gc=False):
    """Expected cost of a request on one deployment, now."""

    joules: float
    usd_energy: float
    usd_capex: float
    usd_list: float
    queue_s: float = 0.0
    ttft_s: float = 0.0
    duration_s: float = 0.0

    @property
    def usd_total(self) -> float:
        return self.usd_energy + self.usd_capex + self.usd_list


class Costing(Struct, kw_only=True):
    """What one request really cost. Input/output splits follow prefill/decode work."""

    joules: float | None
    energy_source: EnergySource | None
    joules_input: float = 0.0
    joules_output: float = 0.0
    busy_s: float = 0.0
    usd_energy: float = 0.0
    usd_capex: float = 0.0
    usd_list: float = 0.0
    usd_input: float = 0.0
    usd_output: float = 0.0

    @property
    def usd_total(self) -> float:
        return self.usd_energy + self.usd_capex + self.usd_list


class Metering(Protocol):
    """One request's share of a backend's energy and busy time, from begin to end.

    ``tokens`` is advanced by the gateway as chunks pass (one per chunk), so concurrent
    requests on one board can be apportioned by the work each has done.
    """

    tokens: int

    def end(self, usage: BackendUsage | None, at: float | None = None) -> Costing: ...


class BackendCost(Protocol):
    def quote(self, shape: RequestShape, status: BackendStatus) -> Quote: ...

    def begin(self, request_id: str, prompt_tokens: int, at: float | None = None) -> Metering: ...


class CostModel(Protocol):
    def for_backend(self, backend: Backend, config: BackendConfig) -> BackendCost: ...


class EnergyMeter(Protocol):
    """A cumulative energy counter for the hardware a backend runs on.

    ``read()`` returns cumulative joules (monotonic, wrap-around already handled); the
    cost model reads it as requests start and end and splits the difference between
    them. ``close()`` releases what it holds (a driver handle, a sampling thread).
    ``source`` names where the figure comes from (one of
    :data:`gateway.backend.KNOWN_ENERGY_SOURCES`, or the meter's own name); it is
    recorded with every request the meter measured.
    """

    source: EnergySource

    def read(self) -> float: ...

    def close(self) -> None: ...


class EnergySettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A backend's ``energy:`` section: which meter measures it, and the meters' settings.

    ``meter`` is a registered meter's name, or ``auto`` (the cost model picks one by the
    backend's hardware kind). ``options`` is free for third-party meters.
    """

    meter: str = "auto"
    gpu_indices: tuple[int, ...] = ()
    rapl_root: str = "/sys/class/powercap"
    options: dict[str, Any] = field(default_factory=dict)


WattsAt = Callable[[float], float]
"""The board's power model: watts drawn with a given number of concurrent requests."""

MeterFactory = Callable[[EnergySettings, Backend, WattsAt], EnergyMeter]
"""``factory(settings, backend, watts_at)``: a meter for one backend. Raise
:class:`~gateway.errors.ConfigError`, ``OSError`` or ``ImportError`` when the meter cannot
work here (no driver, no permission); under ``meter: auto`` the cost model then falls back
to the power model."""


CostModelFactory = Callable[[Mapping[str, Any], Mapping[str, MeterFactory]], CostModel]
"""``factory(prices, meters)``: the config's ``prices:`` mapping and every registered
energy meter by name, to a :class:`CostModel` (usually the cost model class itself)."""


class ListPrice(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Per-token prices of a paid upstream API, in USD per million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def usd(self, prompt_tokens: int, completion_tokens: int) -> tuple[float, float]:
        return (
            prompt_tokens * self.input_per_mtok / 1e6,
            completion_tokens * self.output_per_mtok / 1e6,
        )


class _ListPriceMetering:
    def __init__(self, price: ListPrice) -> None:
        self.tokens = 0
        self._price = price

    def end(self, usage: BackendUsage | None, at: float | None = None) -> Costing:
        if usage is None:
            return Costing(joules=None, energy_source=None)
        usd_in, usd_out = self._price.usd(usage.prompt_tokens, usage.completion_tokens)
        return Costing(
            joules=usage.energy_joules,
            energy_source=usage.energy_source,
            usd_list=usd_in + usd_out,
            usd_input=usd_in,
            usd_output=usd_out,
        )


class _ListPriceCost:
    def __init__(self, price: ListPrice) -> None:
        self._price = price

    def quote(self, shape: RequestShape, status: BackendStatus) -> Quote:
        usd_in, usd_out = self._price.usd(shape.prompt_tokens, shape.output_tokens)
        return Quote(joules=0.0, usd_energy=0.0, usd_capex=0.0, usd_list=usd_in + usd_out)

    def begin(self, request_id: str, prompt_tokens: int, at: float | None = None) -> Metering:
        return _ListPriceMetering(self._price)


class ListPriceOnly:
    """The fallback cost model when no cost plugin is installed."""

    def __init__(self, prices: Mapping[str, Any]) -> None:
        self._prices = prices

    def for_backend(self, backend: Backend, config: BackendConfig) -> BackendCost:
        return _ListPriceCost(convert_list_price(config))


def convert_list_price(config: BackendConfig) -> ListPrice:
    return convert(
        dict(config.list_price), ListPrice, config.source, f"backends[{config.index}].list_price"
    )
