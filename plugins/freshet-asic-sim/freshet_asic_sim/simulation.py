"""What one request costs on the simulated card: times (simulated seconds) and joules.

Energy model (all figures are parameters, see :mod:`freshet_asic_sim.params`):

* **Busy energy.** While a request occupies a stream (LoRA swap + prefill + decode), it is
  charged the card's active power and the host's share, divided among the card's streams:
  ``watts_active / streams_per_card`` (card) and ``host_watts / streams_per_card`` (host).
  With the default one stream per card that is 200 W + 50 W, so decode costs
  200 / 16,000 = 0.0125 J/token on the card and 250 / 16,000 = 0.0156 J/token with host.
* **Idle energy.** Every stream slot that is not busy draws ``watts_idle / streams_per_card``
  (card) and ``host_watts / streams_per_card`` (host). This idle energy of the whole fleet is
  accrued on the simulated clock and charged to the *next request to finish*: a completing
  request takes all idle energy accrued since the previous completion, up to its own end.
  Under full load there is no idle time and requests pay only their busy energy; after a
  quiet spell, the first request to finish carries the spell. Nothing is lost or counted
  twice. A cancelled request takes no idle share (it has no usage chunk to carry it), so
  the share goes to the next completed one.

``energy_j`` (= ``BackendUsage.energy_joules``) is card + host, busy + idle share.
"""

from __future__ import annotations

from msgspec import Struct


class Simulation(Struct, kw_only=True, frozen=True):
    """One request's simulated timeline (absolute simulated seconds) and energy (J)."""

    prompt_tokens: int
    output_tokens: int
    adapter: str | None
    card: int
    stream: int  # slot index across all cards
    arrival_s: float
    start_s: float
    end_s: float
    swap_s: float
    prefill_s: float
    decode_s: float
    decode_tokens_per_s: float  # the per-stream rate the decode ran at
    card_active_j: float
    host_active_j: float
    card_idle_j: float
    host_idle_j: float
    cancelled: bool = False

    @property
    def queue_s(self) -> float:
        return self.start_s - self.arrival_s

    @property
    def busy_s(self) -> float:
        """Seconds the request occupied its stream (the basis of its capex share)."""
        return self.end_s - self.start_s

    @property
    def duration_s(self) -> float:
        return self.end_s - self.arrival_s

    @property
    def ttft_s(self) -> float | None:
        """Arrival to the first output token; None when no token was produced."""
        if self.output_tokens == 0:
            return None
        return self.queue_s + self.swap_s + self.prefill_s + 1.0 / self.decode_tokens_per_s

    @property
    def card_j(self) -> float:
        """Card-only joules: busy plus idle share, without the host."""
        return self.card_active_j + self.card_idle_j

    @property
    def energy_j(self) -> float:
        """Card + host, busy + idle share: what ``energy_joules`` reports."""
        return self.card_active_j + self.host_active_j + self.card_idle_j + self.host_idle_j

    @property
    def card_decode_j(self) -> float:
        """Card joules spent in the decode phase only (no swap, prefill or idle share)."""
        return self.card_active_j * self.decode_s / self.busy_s if self.busy_s > 0 else 0.0

    @property
    def host_decode_j(self) -> float:
        return self.host_active_j * self.decode_s / self.busy_s if self.busy_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens over decode time: the vendor's "tokens/s per user" figure."""
        return self.output_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def timings(self) -> dict[str, float]:
        """Flat figures for ``BackendUsage.timings`` (seconds are simulated; ``_j`` joules)."""
        out = {
            "queue_s": self.queue_s,
            "swap_s": self.swap_s,
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "busy_s": self.busy_s,
            "duration_s": self.duration_s,
            "arrival_s": self.arrival_s,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "card": float(self.card),
            "stream": float(self.stream),
            "output_tokens_per_s": self.output_tokens_per_s,
            "energy_card_active_j": self.card_active_j,
            "energy_host_active_j": self.host_active_j,
            "energy_card_idle_j": self.card_idle_j,
            "energy_host_idle_j": self.host_idle_j,
            "energy_card_decode_j": self.card_decode_j,
            "energy_host_decode_j": self.host_decode_j,
            "energy_card_j": self.card_j,
            "energy_with_host_j": self.energy_j,
        }
        if self.ttft_s is not None:
            out["ttft_s"] = self.ttft_s
        return out
