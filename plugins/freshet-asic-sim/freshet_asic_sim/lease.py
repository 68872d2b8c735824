"""One admitted request on the card model, and what it cost once it ended."""

from __future__ import annotations

from dataclasses import dataclass

from freshet_asic_sim.params import AsicParams
from freshet_asic_sim.simulation import Simulation


@dataclass
class Lease:
    """One admitted request and its plan on a slot."""

    id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    adapter: str | None
    prefill: float
    decode: float
    slot: int = -1
    start: float = 0.0
    swap: float = 0.0
    started: bool = False
    cut: float | None = None  # when it was cancelled, if it was

    @property
    def decode_start(self) -> float:
        return self.start + self.swap + self.prefill

    @property
    def end(self) -> float:
        natural = self.decode_start + self.decode
        return natural if self.cut is None else min(natural, self.cut)


def settle(
    lease: Lease, params: AsicParams, idle_slot_s: float, cancelled: bool = False
) -> Simulation:
    """The request's timeline and joules; ``idle_slot_s`` is its share of idle slot-seconds.

    See :mod:`freshet_asic_sim.simulation` for the energy model.
    """
    p = params
    busy = lease.end - lease.start
    swap = min(lease.swap, busy)
    prefill = min(lease.prefill, busy - swap)
    decode = max(0.0, busy - swap - prefill)
    tokens = lease.output_tokens
    if cancelled:  # it produced only the tokens that were due before it was stopped
        tokens = min(tokens, int(decode * p.decode_tokens_per_s + 1e-9))
    per_slot = 1.0 / p.streams_per_card
    return Simulation(
        prompt_tokens=lease.prompt_tokens,
        output_tokens=tokens,
        adapter=lease.adapter,
        card=lease.slot // p.streams_per_card,
        stream=lease.slot,
        arrival_s=lease.arrival,
        start_s=lease.start,
        end_s=lease.end,
        swap_s=swap,
        prefill_s=prefill,
        decode_s=decode,
        decode_tokens_per_s=p.decode_tokens_per_s,
        card_active_j=p.watts_active * per_slot * busy,
        host_active_j=p.host_watts * per_slot * busy,
        card_idle_j=p.watts_idle * per_slot * idle_slot_s,
        host_idle_j=p.host_watts * per_slot * idle_slot_s,
        cancelled=cancelled,
    )
