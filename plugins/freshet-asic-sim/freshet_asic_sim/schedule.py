"""A discrete-event model of the cards, on a simulated clock (seconds, no asyncio).

Every stream slot (``cards * streams_per_card``) serves one request at a time. Requests
are planned in arrival order (FIFO): each takes the slot that frees first, preferring, among
slots free at the same moment, a card that already holds its LoRA adapter. It then occupies
the slot for ``swap + prefill + decode`` seconds; the swap (``lora_swap_s``) applies only
when the adapter is not resident on that card, whose adapters are kept LRU in
``lora_slots``. A request whose planned start is after ``now`` is *waiting*; more than
``queue_limit`` waiting requests and a new one is refused with :class:`QueueFull`.

Plans of waiting requests are recomputed whenever the schedule changes (a request cancelled
or ending early), so later requests never wait for work that will not happen. Once a
request has started, its plan is fixed. The model only moves forward in time: every method
takes ``now`` and never goes back before the latest ``now`` it has seen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from freshet_asic_sim.lease import Lease, settle
from freshet_asic_sim.params import AsicParams
from freshet_asic_sim.simulation import Simulation


class QueueFull(Exception):
    """Every stream is busy and ``queue_limit`` requests are already waiting."""

    def __init__(self, waiting: int, retry_after_s: float) -> None:
        super().__init__(f"{waiting} requests are already waiting for a stream")
        self.waiting = waiting
        self.retry_after_s = retry_after_s  # simulated seconds until a queue place frees


class CardModel:
    """The live (or what-if) state of all cards: leases, adapter residency, idle energy."""

    def __init__(self, params: AsicParams, now: float = 0.0) -> None:
        self.params = params
        self.slots = params.cards * params.streams_per_card
        self._leases: dict[int, Lease] = {}  # admitted and not ended, in arrival order
        self._ended: list[Lease] = []  # ended, but the idle accrual has not passed their end
        self._lru: list[OrderedDict[str, None]] = [OrderedDict() for _ in range(params.cards)]
        self._next_id = 0
        self._now = now
        self._accrued_until = now
        self._idle_slot_s = 0.0  # idle slot-seconds not yet charged to a request

    @property
    def now(self) -> float:
        return self._now

    def copy(self) -> CardModel:
        """An independent model in the same state, for what-if questions."""
        other = CardModel(self.params, self._now)
        other._leases = {k: replace(v) for k, v in self._leases.items()}
        other._ended = [replace(v) for v in self._ended]
        other._lru = [OrderedDict(od) for od in self._lru]
        other._next_id = self._next_id
        other._accrued_until = self._accrued_until
        other._idle_slot_s = self._idle_slot_s
        return other

    def card_of(self, slot: int) -> int:
        return slot // self.params.streams_per_card

    def resident(self, card: int) -> tuple[str, ...]:
        """Adapters held by ``card``, least recently used first."""
        return tuple(self._lru[card])

    # -- lifecycle -------------------------------------------------------------------

    def admit(self, prompt_tokens: int, output_tokens: int, adapter: str | None, now: float) -> int:
        """Plan a new request arriving at ``now``; returns its lease id."""
        self._advance(now)
        lease = Lease(
            id=self._next_id,
            arrival=self._now,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            adapter=adapter,
            prefill=prompt_tokens / self.params.prefill_tokens_per_s,
            decode=output_tokens / self.params.decode_tokens_per_s,
        )
        self._next_id += 1
        self._leases[lease.id] = lease
        self._replan()
        waiting = [x for x in self._leases.values() if not x.started]
        if lease.start > self._now and len(waiting) > self.params.queue_limit:
            del self._leases[lease.id]
            self._replan()
            ahead = [x.start for x in waiting if x is not lease]
            retry = (min(ahead) if ahead else lease.start) - self._now
            raise QueueFull(len(waiting) - 1, retry)
        return lease.id

    def truncate(self, lease_id: int, output_tokens: int, now: float) -> None:
        """The request produced fewer tokens than planned: its stream frees earlier."""
        self._advance(now)
        lease = self._leases[lease_id]
        lease.output_tokens = min(lease.output_tokens, output_tokens)
        lease.decode = lease.output_tokens / self.params.decode_tokens_per_s
        self._replan()

    def finish(self, lease_id: int, now: float) -> Simulation:
        """The request ended normally (``now`` is at or after its end)."""
        self._advance(now)
        lease = self._leases[lease_id]
        self._accrue(lease.end)
        idle = self._idle_slot_s
        self._idle_slot_s = 0.0
        del self._leases[lease_id]
        self._replan()
        return settle(lease, self.params, idle)

    def cancel(self, lease_id: int, now: float) -> Simulation | None:
        """Drop a request mid-way: a waiting one never uses the card, a running one stops now.

        Returns what it did use (None if it never started), without an idle share.
        """
        self._advance(now)
        lease = self._leases.pop(lease_id)
        if not lease.started:
            self._replan()
            return None
        lease.cut = max(lease.start, self._now)
        if lease.end > self._accrued_until:
            self._ended.append(lease)
        self._replan()
        return settle(lease, self.params, 0.0, cancelled=True)

    def simulate(
        self, prompt_tokens: int, output_tokens: int, at_time: float, adapter: str | None = None
    ) -> Simulation:
        """What the request would cost if it arrived at ``at_time``; this model is unchanged.

        Times before the model's latest event are taken as that event's time.
        """
        what_if = self.copy()
        lease_id = what_if.admit(prompt_tokens, output_tokens, adapter, at_time)
        return what_if.finish(lease_id, what_if._leases[lease_id].end)

    # -- queries ---------------------------------------------------------------------

    def lease(self, lease_id: int) -> Lease:
        return self._leases[lease_id]

    def first_token_due(self, lease_id: int) -> float:
        lease = self._leases[lease_id]
        if lease.output_tokens == 0:
            return lease.end
        return lease.decode_start + 1.0 / self.params.decode_tokens_per_s

    def token_due(self, lease_id: int, index: int) -> float:
        """When output token ``index`` (0-based) leaves the card; past the plan, its end."""
        lease = self._leases[lease_id]
        if index >= lease.output_tokens:
            return lease.end
        return lease.decode_start + (index + 1) / self.params.decode_tokens_per_s

    def counts(self, now: float) -> tuple[int, int]:
        """(running, waiting) at ``now``, without changing the model."""
        running = waiting = 0
        for lease in self._leases.values():
            if lease.start > now:
                waiting += 1
            elif lease.end > now:
                running += 1
        return running, waiting

    def outlook(self, now: float) -> tuple[float, tuple[str, ...]]:
        """(seconds until a request arriving at ``now`` could start on the slot that frees
        first, the adapters resident once the requests already planned have started),
        without changing the model: what the router's quote needs."""
        free = [now] * self.slots
        lru = [OrderedDict(od) for od in self._lru]
        for lease in self._leases.values():  # arrival order: the plan's order
            free[lease.slot] = max(free[lease.slot], lease.end)
            if not lease.started:
                _touch(lru[self.card_of(lease.slot)], lease.adapter, self.params.lora_slots)
        loaded = {name for card in lru for name in card}
        return max(0.0, min(free) - now), tuple(sorted(loaded))

    # -- internals -------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)
        self._commit()

    def _commit(self) -> None:
        """Requests whose planned start has come are started: their plan is final."""
        for lease in self._leases.values():
            if not lease.started and lease.start <= self._now:
                lease.started = True
                _touch(self._lru[self.card_of(lease.slot)], lease.adapter, self.params.lora_slots)

    def _replan(self) -> None:
        free = [self._now] * self.slots
        for lease in self._leases.values():
            if lease.started:
                free[lease.slot] = max(free[lease.slot], lease.end)
        lru = [OrderedDict(od) for od in self._lru]
        for lease in self._leases.values():
            if lease.started:
                continue
            best: tuple[float, bool, int] | None = None
            for slot in range(self.slots):
                missing = lease.adapter is not None and lease.adapter not in lru[self.card_of(slot)]
                key = (max(free[slot], lease.arrival), missing, slot)
                if best is None or key < best:
                    best = key
            assert best is not None  # there is at least one slot
            lease.start, missing, lease.slot = best
            lease.swap = self.params.lora_swap_s if missing else 0.0
            _touch(lru[self.card_of(lease.slot)], lease.adapter, self.params.lora_slots)
            free[lease.slot] = lease.end
        self._commit()

    def _accrue(self, until: float) -> None:
        """Add the idle slot-seconds between the last accrual and ``until`` to the pool."""
        begin = self._accrued_until
        if until <= begin:
            return
        busy = 0.0
        for lease in (*self._leases.values(), *self._ended):
            busy += max(0.0, min(lease.end, until) - max(lease.start, begin))
        self._idle_slot_s += max(0.0, self.slots * (until - begin) - busy)
        self._accrued_until = until
        self._ended = [x for x in self._ended if x.end > until]


def _touch(lru: OrderedDict[str, None], adapter: str | None, capacity: int) -> None:
    """Mark ``adapter`` used on a card, loading it and evicting the least recently used."""
    if adapter is None:
        return  # base weights are in silicon: no slot, no swap
    if adapter in lru:
        lru.move_to_end(adapter)
        return
    lru[adapter] = None
    while len(lru) > capacity:
        lru.popitem(last=False)
