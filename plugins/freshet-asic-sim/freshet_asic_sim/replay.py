"""Replay a trace of requests through a fresh model of the cards, without serving anything.

This is the what-if engine for ``freshet replay``: the same discrete-event model the live
backend uses, driven by the trace's arrival times instead of the event loop's clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from msgspec import Struct

from freshet_asic_sim.params import AsicParams
from freshet_asic_sim.schedule import CardModel, QueueFull
from freshet_asic_sim.simulation import Simulation


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
