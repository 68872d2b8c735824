"""The ``energy`` cost model: quotes before sending, joules and dollars after."""

from __future__ import annotations

import difflib
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from freshet_energy.board import BoardAccount, Share
from freshet_energy.counters import ModelledCounter
from freshet_energy.power import PowerCurve
from freshet_energy.prices import Prices, Tariff, dollars, zone
from gateway.plugin_api import (
    Backend,
    BackendConfig,
    BackendStatus,
    BackendUsage,
    ConfigError,
    Costing,
    EnergyMeter,
    EnergySettings,
    EnergySource,
    ListPrice,
    MeterFactory,
    Quote,
    RequestShape,
    convert_list_price,
    convert_section,
    queue_wait,
    swap_wait,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class EnergyMetering(Share):
    __slots__ = ("_cost",)

    def __init__(self, cost: BackendEnergyCost, prompt_tokens: int) -> None:
        super().__init__(float(prompt_tokens))
        self._cost = cost

    def end(self, usage: BackendUsage | None, at: float | None = None) -> Costing:
        return self._cost.settle(self, usage, time.time() if at is None else at)


class BackendEnergyCost:
    def __init__(
        self,
        backend: Backend,
        config: BackendConfig,
        prices: Prices,
        counter: EnergyMeter,
        simulated: bool,
    ) -> None:
        self._profile = backend.profile
        self._curve = PowerCurve(backend.profile)
        self._prices = prices
        self._list = convert_list_price(config)
        self._simulated = simulated
        self.board = BoardAccount(counter, backend.profile, time.monotonic, prices.idle)
        # A board that draws nothing and costs nothing by the hour (a paid API's profile)
        # has only zeros to split: its requests keep out of the account (their joules,
        # energy and hardware dollars are 0 either way; the list price is charged as ever).
        self._free = (
            not simulated
            and isinstance(counter, ModelledCounter)
            and self._curve.draws_nothing
            and backend.profile.capex_per_hour == 0
        )
        self._prepare_quotes()

    @property
    def source(self) -> EnergySource:
        return "simulated" if self._simulated else self.board.counter.source

    @property
    def prices(self) -> Prices:
        return self._prices

    def _prepare_quotes(self) -> None:
        """Everything a quote needs that does not change per request, computed once:
        the router quotes every candidate of every request. Per batch size b, one
        request's share of each second of service: joules (watts at b / b), energy $
        at the flat price, and capex $ (capex per second / b)."""
        p = self._profile
        slots = max(1, p.max_concurrency)
        c_prefill = 1.0 / p.prefill_tokens_per_s if p.prefill_tokens_per_s else 0.0
        c_decode = 1.0 / p.decode_tokens_per_s if p.decode_tokens_per_s else 0.0
        self._pue = p.pue if p.pue is not None else self._prices.pue
        usd_per_joule = self._pue * self._prices.kwh_usd / 3.6e6
        capex_per_s = p.capex_per_hour / 3600.0
        self._per_batch: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
        for b in range(1, slots + 1):
            j_per_s = self._curve.watts(b) / b
            self._per_batch.append((j_per_s, j_per_s * usd_per_joule, capex_per_s / b))
        self._constants = (
            slots,
            c_prefill,
            c_decode,
            self._list.input_per_mtok / 1e6,
            self._list.output_per_mtok / 1e6,
            bool(self._prices.tariffs),
        )

    def quote(self, shape: RequestShape, status: BackendStatus) -> Quote:
        # Called for every candidate of every request: table lookups and plain arithmetic
        # on locals.
        slots, c_prefill, c_decode, in_per_tok, out_per_tok, tariffs = self._constants
        prompt, output = shape.prompt_tokens, shape.output_tokens
        prefill_s = prompt * c_prefill
        # The adapter's swap, when it is not loaded, occupies the slot like prefill does.
        swap_s = swap_wait(shape, status) if shape.adapter is not None else 0.0
        service_s = swap_s + prefill_s + output * c_decode
        running = status.running
        busy = status.busy_s
        if running < slots:
            j_per_s, usd_e_per_s, usd_c_per_s = self._per_batch[running + 1]
            queue_s = 0.0 if busy is None else max(0.0, busy)
        else:
            j_per_s, usd_e_per_s, usd_c_per_s = self._per_batch[slots]
            queue_s = queue_wait(status, service_s, slots)
        joules = j_per_s * service_s
        return Quote(
            joules=joules,
            usd_energy=(
                joules * self._pue * self._prices.kwh_at(time.time()) / 3.6e6
                if tariffs
                else usd_e_per_s * service_s
            ),
            usd_capex=usd_c_per_s * service_s,
            usd_list=prompt * in_per_tok + output * out_per_tok,
            queue_s=queue_s,
            # The first token is out after the swap, the prefill and one decode step.
            ttft_s=queue_s + swap_s + prefill_s + (c_decode if output > 0 else 0.0),
            duration_s=queue_s + service_s,
        )

    def begin(self, request_id: str, prompt_tokens: int, at: float | None = None) -> EnergyMetering:
        metering = EnergyMetering(self, prompt_tokens)
        if not self._free:
            self.board.begin_share(metering)
        return metering

    def settle(self, share: EnergyMetering, usage: BackendUsage | None, at: float) -> Costing:
        self.board.end(share)
        j_in, j_out, busy, source = share.joules_in, share.joules_out, share.busy_s, self.source
        if usage is not None and usage.energy_joules is not None and self._simulated:
            j_in, j_out, busy = _simulated_split(usage, self._prices.idle)
            source = usage.energy_source or "simulated"
        elif self._simulated:
            source = "model"  # no simulated figure (client gone): the profile's model
        joules = j_in + j_out
        prompt = usage.prompt_tokens if usage else 0
        completion = usage.completion_tokens if usage else share.tokens
        d = dollars(
            self._prices,
            joules=joules,
            busy_s=busy,
            pue=self._profile.pue,
            capex_per_hour=self._profile.capex_per_hour,
            list_price=self._list,
            prompt_tokens=prompt,
            completion_tokens=completion,
            at=at,
            cached_tokens=usage.cached_prompt_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
        )
        f_in = j_in / joules if joules > 0 else (1.0 if completion == 0 else 0.0)
        return Costing(
            joules=joules,
            energy_source=source,
            joules_input=j_in,
            joules_output=j_out,
            busy_s=busy,
            usd_energy=d.energy,
            usd_capex=d.capex,
            usd_list=d.list_in + d.list_out,
            usd_input=(d.energy + d.capex) * f_in + d.list_in,
            usd_output=(d.energy + d.capex) * (1.0 - f_in) + d.list_out,
        )


def _simulated_split(usage: BackendUsage, idle: str) -> tuple[float, float, float]:
    """Input/output joules and busy seconds from a simulated backend's own figures."""
    t = usage.timings
    total = float(usage.energy_joules or 0.0)
    if "energy_card_active_j" in t:
        active = t["energy_card_active_j"] + t.get("energy_host_active_j", 0.0)
        if idle != "attribute":
            total = active  # the simulator's idle share stays idle overhead
        decode = t.get("energy_card_decode_j", 0.0) + t.get("energy_host_decode_j", 0.0)
        j_out = min(decode, total)
        return total - j_out, j_out, float(t.get("busy_s", usage.duration_s or 0.0))
    return 0.0, total, float(usage.duration_s or 0.0)


class EnergyCostModel:
    def __init__(self, prices: Mapping[str, Any], meters: Mapping[str, MeterFactory]) -> None:
        timezone = prices.get("timezone")
        if isinstance(timezone, str):  # checked here too, for an error that names its key
            try:
                zone(timezone)
            except ValueError as exc:
                raise ConfigError(str(exc), key="prices.timezone") from exc
        self.prices = _section(dict(prices), Prices, None, "prices")
        self._meters = meters
        self.costs: dict[str, BackendEnergyCost] = {}

    def for_backend(self, backend: Backend, config: BackendConfig) -> BackendEnergyCost:
        key = f"backends[{config.index}].energy"
        energy = dict(config.energy)
        # required: true -> a meter that cannot work here stops the start; otherwise the
        # backend's power is modelled, with a warning.
        required = energy.pop("required", False)
        if not isinstance(required, bool):
            raise ConfigError(
                f"must be true or false, got {required!r}",
                file=config.source,
                key=f"{key}.required",
            )
        settings = _section(energy, EnergySettings, config.source, key, also=("required",))
        if "gpu_indices" not in config.energy and "gpu_indices" in config.params:
            settings = EnergySettings(
                meter=settings.meter,
                gpu_indices=tuple(config.params["gpu_indices"]),
                rapl_root=settings.rapl_root,
                options=settings.options,
            )
        name = settings.meter if settings.meter != "auto" else _auto_meter(backend, settings)
        curve = PowerCurve(backend.profile)
        if name == "simulated":
            counter: EnergyMeter = ModelledCounter(curve.watts, time.monotonic)
        else:
            factory = self._meters.get(name)
            if factory is None:
                raise ConfigError(
                    f"unknown energy meter {name!r}{_did_you_mean(name, self._meters)} "
                    f"(installed: {', '.join(sorted(self._meters))}, or auto, simulated)",
                    file=config.source,
                    key=f"{key}.meter",
                )
            try:
                counter = factory(settings, backend, curve.watts)
            except (ConfigError, OSError, ImportError) as exc:
                reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
                if required:
                    raise ConfigError(
                        f"energy meter {name!r} unavailable here ({reason}), and the config "
                        "says required: true",
                        file=config.source,
                        key=f"{key}.meter",
                    ) from exc
                if settings.meter == "auto":
                    log.info(
                        "backend %s: no %s meter here (%s); modelling", config.id, name, reason
                    )
                else:
                    log.warning(
                        "backend %s: energy meter %s unavailable here (%s); modelling power "
                        "from the profile instead (energy.required: true refuses to start)",
                        config.id,
                        name,
                        reason,
                    )
                counter = ModelledCounter(curve.watts, time.monotonic)
        cost = BackendEnergyCost(backend, config, self.prices, counter, name == "simulated")
        self.costs[config.id] = cost
        return cost


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]+)`")


def _did_you_mean(word: str, names: Any) -> str:
    close = difflib.get_close_matches(word, sorted(names), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _section(
    value: dict[str, Any], type_: type[T], source: str | None, key: str, also: tuple[str, ...] = ()
) -> T:
    """A config section; an unknown key's error names the known key it resembles."""
    try:
        return convert_section(value, type_, source, key)
    except ConfigError as exc:
        found = _UNKNOWN_FIELD.match(exc.reason)
        if found is None or exc.key is None:
            raise
        fields: tuple[str, ...] = (*getattr(type_, "__struct_fields__", ()), *also)
        if exc.key != key:  # inside a list of tariffs
            fields = Tariff.__struct_fields__ if ".tariffs[" in exc.key else ()
        hint = _did_you_mean(found.group(1), fields)
        raise ConfigError(
            exc.reason + hint, file=source, key=f"{exc.key}.{found.group(1)}"
        ) from exc


def _auto_meter(backend: Backend, settings: EnergySettings) -> str:
    if backend.kind == "asic":
        return "simulated"
    if backend.kind == "gpu" and settings.gpu_indices:
        return "nvml"
    if backend.kind == "cpu":
        return "rapl"
    return "model"


__all__ = ["BackendEnergyCost", "EnergyCostModel", "EnergySettings", "ListPrice"]
