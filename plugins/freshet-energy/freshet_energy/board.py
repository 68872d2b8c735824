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
    """One request's running share of the board: what the gateway's metering holds.

    Setting :attr:`tokens` (the gateway does, once per chunk) marks the share as having
    worked in the current interval, so the account visits only the shares that worked
    in an interval, not every request on the board.
    """

    __slots__ = (
        "_board",
        "_tokens",
        "busy_s",
        "counted_tokens",
        "dirty",
        "even_j",
        "even_s",
        "joules_in",
        "joules_out",
        "prompt_work",
    )

    def __init__(self, prompt_work: float) -> None:
        self._tokens = 0  # advanced by the gateway as chunks pass
        self._board: BoardAccount | None = None
        self.dirty = False  # in the board's list of shares that worked this interval
        self.counted_tokens = 0
        self.prompt_work = prompt_work  # spent in the first interval
        self.joules_in = 0.0
        self.joules_out = 0.0
        self.busy_s = 0.0
        self.even_j = 0.0  # the board's even-split totals when this share began
        self.even_s = 0.0

    @property
    def tokens(self) -> int:
        return self._tokens

    @tokens.setter
    def tokens(self, value: int) -> None:
        self._tokens = value
        if not self.dirty and self._board is not None:
            self.dirty = True
            self._board.worked.append(self)


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
        self.worked: list[Share] = []  # the active shares that worked this interval
        # Energy and seconds of the intervals split evenly, per share, since the start.
        self._even_j = 0.0
        self._even_s = 0.0

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
        # Only the shares that worked in this interval (a prompt to read, tokens passed)
        # get a part of it, each by its work: the others' work is zero.
        worked, self.worked = self.worked, []
        works: list[tuple[Share, float, float]] = []
        total = 0.0
        prefill_cost, decode_cost = self.prefill_cost, self.decode_cost
        for share in worked:
            share.dirty = False
            w_in = share.prompt_work * prefill_cost
            w_out = (share._tokens - share.counted_tokens) * decode_cost
            share.prompt_work = 0.0
            share.counted_tokens = share._tokens
            if w_in or w_out:
                works.append((share, w_in, w_out))
                total += w_in + w_out
        if total > 0:
            e_per_work, s_per_work = d_e / total, d_t / total
            for share, w_in, w_out in works:
                share.joules_in += w_in * e_per_work
                share.joules_out += w_out * e_per_work
                share.busy_s += (w_in + w_out) * s_per_work
        else:
            # Nothing measurable happened: split evenly between the active shares, as
            # generation work. Kept as running totals, read by each share at its end.
            n = len(self._active)
            self._even_j += d_e / n
            self._even_s += d_t / n

    def advance(self) -> None:
        """Book the energy drawn since the last event (e.g. idle time, for a report)."""
        with self._lock:
            self._advance()

    def begin_share(self, share: Share) -> None:
        with self._lock:
            self._advance()
            self._active.add(share)
            share._board = self
            share.even_j, share.even_s = self._even_j, self._even_s
            if share.prompt_work and not share.dirty:
                share.dirty = True
                self.worked.append(share)
            self._set_concurrency()

    def end(self, share: Share) -> None:
        with self._lock:
            if share not in self._active:
                return
            if not share.dirty:  # its last tokens count, however they were set
                share.dirty = True
                self.worked.append(share)
            self._advance()
            self._active.discard(share)
            share._board = None
            if share.dirty:  # no time passed since its last work: drop it from the list
                share.dirty = False
                self.worked = [s for s in self.worked if s is not share]
            share.joules_out += self._even_j - share.even_j
            share.busy_s += self._even_s - share.even_s
            self._set_concurrency()

    def _set_concurrency(self) -> None:
        if isinstance(self.counter, ModelledCounter):
            self.counter.concurrent = len(self._active)
