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
from typing import Annotated, Any, Protocol

from msgspec import Meta, Struct, field

from gateway.backend import (
    Backend,
    BackendConfig,
    BackendStatus,
    BackendUsage,
    EnergySource,
    convert,
)

NonNegative = Annotated[float, Meta(ge=0)]


class RequestShape(Struct, kw_only=True, frozen=True):
    """What the router knows of a request before sending it; ``adapter``: the LoRA adapter
    of the deployment being quoted (a quote counts its swap when it is not loaded)."""

    prompt_tokens: int
    output_tokens: int
    adapter: str | None = None


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
    # The cost model's own TTFT and duration, before the gateway's learned correction
    # (gateway.flow.calibration) made ttft_s and duration_s of them; None: uncorrected.
    model_ttft_s: float | None = None
    model_duration_s: float | None = None

    @property
    def usd_total(self) -> float:
        return self.usd_energy + self.usd_capex + self.usd_list


def queue_wait(status: BackendStatus, service_s: float, slots: int) -> float:
    """Seconds a request admitted now waits for a slot: the backend's own
    :attr:`~gateway.backend.BackendStatus.busy_s` when it reports one, else an estimate
    from ``running`` and ``waiting`` as if each were ``service_s`` long."""
    if status.busy_s is not None:
        return max(0.0, status.busy_s)
    ahead = status.running + status.waiting + 1 - slots
    return ahead * service_s / slots if ahead > 0 else 0.0


def swap_wait(shape: RequestShape, status: BackendStatus) -> float:
    """Seconds to load the request's adapter first: the backend's swap time when it reports
    which adapters are loaded and this one is not, else 0."""
    loaded = status.adapters_loaded
    if shape.adapter is None or loaded is None or shape.adapter in loaded:
        return 0.0
    return status.adapter_swap_s


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
    """Per-token prices of a paid upstream API, in USD per million tokens.

    ``cached_input_per_mtok`` prices prompt tokens the upstream read from its prompt cache
    and ``cache_write_per_mtok`` those it wrote to one (Anthropic bills both; OpenAI
    reports reads only). Either, when not given, is the input price: a cache the price
    sheet does not mention costs what any prompt token costs. Reasoning tokens are
    completion tokens and are priced as output, as OpenAI bills them.
    """

    input_per_mtok: NonNegative = 0.0
    output_per_mtok: NonNegative = 0.0
    cached_input_per_mtok: NonNegative | None = None
    cache_write_per_mtok: NonNegative | None = None

    def usd(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> tuple[float, float]:
        """(input, output) dollars; ``cached_tokens`` and ``cache_write_tokens`` are parts
        of ``prompt_tokens`` (OpenAI's counting), priced at their own rates."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        written = min(max(cache_write_tokens, 0), prompt_tokens - cached)
        cached_price = (
            self.input_per_mtok
            if self.cached_input_per_mtok is None
            else self.cached_input_per_mtok
        )
        write_price = (
            self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        )
        return (
            (
                (prompt_tokens - cached - written) * self.input_per_mtok
                + cached * cached_price
                + written * write_price
            )
            / 1e6,
            completion_tokens * self.output_per_mtok / 1e6,
        )

    def usd_of(self, usage: BackendUsage) -> tuple[float, float]:
        """(input, output) dollars of a backend's final usage, its cache counts included."""
        return self.usd(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_prompt_tokens,
            usage.cache_write_tokens,
        )


class _ListPriceMetering:
    def __init__(self, price: ListPrice) -> None:
        self.tokens = 0
        self._price = price

    def end(self, usage: BackendUsage | None, at: float | None = None) -> Costing:
        if usage is None:
            return Costing(joules=None, energy_source=None)
        usd_in, usd_out = self._price.usd_of(usage)
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
        # No profile to time the request by: only the wait the backend itself reports.
        wait = (status.busy_s or 0.0) + swap_wait(shape, status)
        return Quote(
            joules=0.0,
            usd_energy=0.0,
            usd_capex=0.0,
            usd_list=usd_in + usd_out,
            queue_s=wait,
            ttft_s=wait,
            duration_s=wait,
        )

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
