"""Replay a trace of requests through a fresh model of the cards, without serving anything.

This is the what-if engine for ``freshet replay``: the same discrete-event model the live
backend uses, driven by the trace's arrival times instead of the event loop's clock.
:func:`replay` runs a whole trace through one card; :class:`AsicSimulator` is the
backend type's simulator (``register_simulators``), one request at a time as the router
sends them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from msgspec import Struct

from freshet_asic_sim.admission import output_budget
from freshet_asic_sim.params import AsicParams, load_adapters, load_params
from freshet_asic_sim.schedule import CardModel, QueueFull
from freshet_asic_sim.simulation import Simulation
from gateway.plugin_api import (
    Backend,
    BackendConfig,
    BackendStatus,
    BackendUsage,
    GenerationRequest,
    ModelNotFound,
    RateLimited,
    RegisterSimulator,
    SimDone,
    SimRequest,
    SimTotals,
    convert_section,
    hookimpl,
)


class TraceEntry(Struct, kw_only=True, frozen=True):
    at_s: float  # arrival, simulated seconds from the start of the trace
    prompt_tokens: int
    output_tokens: int
    adapter: str | None = None


def replay(params: AsicParams, trace: Iterable[TraceEntry]) -> list[Simulation | None]:
    """One result per entry, in the trace's order; None where the queue was full."""
    entries = list(trace)
    results: list[Simulation | None] = [None] * len(entries)
    if not entries:
        return results
    order = sorted(range(len(entries)), key=lambda k: entries[k].at_s)
    model = CardModel(params, now=min(0.0, entries[order[0]].at_s))
    running: list[tuple[float, int, int]] = []  # (end, lease id, entry index)

    def finish_until(time: float) -> None:
        while running and running[0][0] <= time:
            end, lease_id, index = heapq.heappop(running)
            results[index] = model.finish(lease_id, end)

    for index in order:
        entry = entries[index]
        finish_until(entry.at_s)
        try:
            lease_id = model.admit(
                entry.prompt_tokens, entry.output_tokens, entry.adapter, entry.at_s
            )
        except QueueFull:
            continue
        heapq.heappush(running, (model.lease(lease_id).end, lease_id, index))
    finish_until(float("inf"))
    return results


class _NoOptions(Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class AsicSimulator:
    """The card model as ``freshet replay``'s simulator for ``asic-sim`` backends: the same
    :class:`~freshet_asic_sim.schedule.CardModel`, admission checks and usage (timings and
    joules) as the live backend, on the replay's clock instead of the event loop's.

    A card with a ``time_scale`` runs live at that many wall seconds per simulated second;
    the replay's clock is the wall's, so arrivals go into the model divided by it and the
    times that come out (a request's TTFT, duration and end) are multiplied by it, as a live
    gateway measures them. Joules and busy seconds stay the model's, as live."""

    def __init__(self, backend: Backend, config: BackendConfig, options: Mapping[str, Any]) -> None:
        convert_section(dict(options), _NoOptions, None, f"--sim {config.id}")
        self.id = config.id
        self.params = load_params(config)
        self._adapters = {a.name for a in load_adapters(config)}
        self._caps = backend.deployments[0]
        self.model = CardModel(self.params, now=0.0)
        self._scale = self.params.time_scale
        self._running: list[tuple[float, int, int]] = []  # (end, lease id, tag)
        self._active_j = 0.0
        self._busy_slot_s = 0.0

    def submit(self, request: SimRequest) -> None:
        wanted = GenerationRequest(
            request_id="", operation="text_completion", model="", max_tokens=request.output_tokens
        )
        output = output_budget(self.id, self.params, wanted, request.prompt_tokens, self._caps)
        if request.adapter is not None and request.adapter not in self._adapters:
            raise ModelNotFound(f"adapter {request.adapter!r} is not configured on {self.id}")
        try:
            lease = self.model.admit(
                request.prompt_tokens, output, request.adapter, request.arrival_s / self._scale
            )
        except QueueFull as exc:
            raise RateLimited(
                f"backend {self.id}: all {self.model.slots} streams are busy and {exc.waiting} "
                f"requests are waiting (queue_limit {self.params.queue_limit})",
                retry_after_s=exc.retry_after_s * self._scale,
            ) from None
        heapq.heappush(self._running, (self.model.lease(lease).end, lease, request.tag))

    def advance(self, until_s: float) -> list[SimDone]:
        done: list[SimDone] = []
        running = self._running
        scale = self._scale
        until_s /= scale
        while running and running[0][0] <= until_s:
            end, lease, tag = heapq.heappop(running)
            sim = self.model.finish(lease, end)
            self._active_j += sim.card_active_j + sim.host_active_j
            self._busy_slot_s += sim.busy_s
            usage = BackendUsage(
                prompt_tokens=sim.prompt_tokens,
                completion_tokens=sim.output_tokens,
                time_to_first_token_s=sim.ttft_s * scale if sim.ttft_s is not None else None,
                duration_s=sim.duration_s * scale,
                energy_joules=sim.energy_j,
                energy_source="simulated",
                timings=sim.timings(),
            )
            done.append(SimDone(tag=tag, end_s=end * scale, usage=usage))
        return done

    def status(self, now_s: float) -> BackendStatus:
        now = now_s / self._scale
        running, waiting = self.model.counts(now)
        busy, loaded = self.model.outlook(now)
        p = self.params
        # As the live card says it (AsicSimBackend.status), in the replay's seconds.
        return BackendStatus(
            healthy=True,
            running=running,
            waiting=waiting,
            busy_s=busy * self._scale,
            adapters_loaded=loaded,
            adapter_swap_s=p.lora_swap_s * self._scale,
            adapter_slots=p.lora_slots * p.cards,
        )

    def totals(self, until_s: float) -> SimTotals:
        p = self.params
        until_s /= self._scale  # the card's own seconds, as its joules
        idle_slot_s = max(0.0, self.model.slots * until_s - self._busy_slot_s)
        idle_j = idle_slot_s * (p.watts_idle + p.host_watts) / p.streams_per_card
        return SimTotals(
            joules=self._active_j + idle_j,
            idle_joules=idle_j,
            busy_s=self._busy_slot_s / self.model.slots,
        )


@hookimpl
def register_simulators(register: RegisterSimulator) -> None:
    register("asic-sim", AsicSimulator)
