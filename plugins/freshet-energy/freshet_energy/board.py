"""Sharing one board's energy and busy time between the requests that ran on it.

The account advances at every event (a request starting or ending): it reads the board's
energy counter, and splits the interval's joules and seconds between the requests active
in it by the work each did in that interval. Work is weighted by what a token costs on
this hardware: a prompt token costs ``1 / prefill_tokens_per_s`` seconds of the board, a
generated token ``1 / decode_tokens_per_s``. A request's prompt work counts in its first
interval; its generated tokens as the gateway sees them pass.

Energy of intervals with no request running is idle energy. With ``idle: overhead`` (the
default) it is kept as the backend's idle overhead and charged to nobody; with
``idle: attribute`` it is carried to the requests of the next busy interval, so that the
requests pay for all the energy the board drew.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from freshet_energy.counters import ModelledCounter
from gateway.plugin_api import EnergyMeter, HardwareProfile

IdleMode = Literal["overhead", "attribute"]


class Share:
    """One request's running share of the board: what the gateway's metering holds."""

    __slots__ = ("busy_s", "counted_tokens", "joules_in", "joules_out", "prompt_work", "tokens")

    def __init__(self, prompt_work: float) -> None:
        self.tokens = 0  # advanced by the gateway as chunks pass
        self.counted_tokens = 0
        self.prompt_work = prompt_work  # spent in the first interval
        self.joules_in = 0.0
        self.joules_out = 0.0
        self.busy_s = 0.0


class BoardAccount:
    def __init__(
        self,
        counter: EnergyMeter,
        profile: HardwareProfile,
        clock: Callable[[], float],
        idle: IdleMode = "overhead",
    ) -> None:
        self.counter = counter
        self._clock = clock
        self._idle_mode = idle
        self.prefill_cost = (
            1.0 / profile.prefill_tokens_per_s if profile.prefill_tokens_per_s else 0.0
        )
        self.decode_cost = 1.0 / profile.decode_tokens_per_s if profile.decode_tokens_per_s else 1.0
        self._active: set[Share] = set()
        self._lock = threading.Lock()
        self._t = clock()
        self._e = counter.read()
        self.idle_joules = 0.0  # idle overhead not charged to any request
        self._carry = 0.0  # idle energy waiting for the next busy interval (attribute mode)

    @property
    def active(self) -> int:
        return len(self._active)

    def _advance(self) -> None:
        now = self._clock()
        if now <= self._t:
            return  # no time passed: keep the work for the interval it belongs to
        energy = self.counter.read()
        d_e, d_t = max(0.0, energy - self._e), now - self._t
        self._t, self._e = now, energy
        if not self._active:
            if self._idle_mode == "attribute":
                self._carry += d_e
            else:
                self.idle_joules += d_e
            return
        d_e += self._carry
        self._carry = 0.0
        works: list[tuple[Share, float, float]] = []
        for share in self._active:
            w_in = share.prompt_work * self.prefill_cost
            w_out = (share.tokens - share.counted_tokens) * self.decode_cost
            share.prompt_work = 0.0
            share.counted_tokens = share.tokens
            works.append((share, w_in, w_out))
        total = sum(w_in + w_out for _, w_in, w_out in works)
        for share, w_in, w_out in works:
            if total > 0:
                f_in, f_out = w_in / total, w_out / total
            else:  # nothing measurable happened yet: split evenly, as generation work
                f_in, f_out = 0.0, 1.0 / len(works)
            share.joules_in += d_e * f_in
            share.joules_out += d_e * f_out
            share.busy_s += d_t * (f_in + f_out)

    def advance(self) -> None:
        """Book the energy drawn since the last event (e.g. idle time, for a report)."""
        with self._lock:
            self._advance()

    def begin_share(self, share: Share) -> None:
        with self._lock:
            self._advance()
            self._active.add(share)
            self._set_concurrency()

    def end(self, share: Share) -> None:
        with self._lock:
            if share not in self._active:
                return
            self._advance()
            self._active.discard(share)
            self._set_concurrency()

    def _set_concurrency(self) -> None:
        if isinstance(self.counter, ModelledCounter):
            self.counter.concurrent = len(self._active)
