"""Admission of one request against its key's limits, and its settlement when it ends.

The service calls :meth:`Admission.admit` once per request, after routing (the budget
reserves the chosen deployment's quote) and before anything is sent; the accounting calls
:meth:`Admission.settle` with the real costing when the request's usage record is made.
Requests without a key, or with a key without limits, cost nothing here.
"""

from __future__ import annotations

from typing import Protocol

from gateway.cost import Costing, Quote
from gateway.flow.context import RequestContext
from gateway.state.keys import ApiKey
from gateway.state.limits import LocalLimits, Reservation

_NOTHING = Costing(joules=None, energy_source=None)


class Limits(Protocol):
    shared: bool

    async def admit(self, key: ApiKey, tokens: int, usd: float, joules: float) -> Reservation: ...

    def settle(self, r: Reservation, usd: float, joules: float, tokens: int) -> None: ...

    async def aclose(self) -> None: ...


class InProcessLimits:
    """:class:`LocalLimits` behind the (async) :class:`Limits` interface."""

    shared = False

    def __init__(self, window_s: float) -> None:
        self.local = LocalLimits(window_s)

    async def admit(self, key: ApiKey, tokens: int, usd: float, joules: float) -> Reservation:
        return self.local.admit(key, tokens, usd, joules)

    def settle(self, r: Reservation, usd: float, joules: float, tokens: int) -> None:
        self.local.settle(r, usd, joules, tokens)

    async def aclose(self) -> None:
        return None


class Admission:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    async def admit(self, ctx: RequestContext, quote: Quote | None, tokens: int) -> None:
        key = ctx.api_key
        if key is None or not key.limited or ctx.reservation is not None:
            return  # no limits, or admitted already (a retry of the same request)
        usd = quote.usd_total if quote is not None else 0.0
        joules = quote.joules if quote is not None else 0.0
        ctx.reservation = await self.limits.admit(key, tokens, usd, joules)

    def release(self, ctx: RequestContext) -> None:
        """Give the reservation back unspent (a request that never reached a backend);
        nothing when it was settled already."""
        self.settle(ctx, _NOTHING, 0)

    def settle(self, ctx: RequestContext, costing: Costing, tokens: int) -> None:
        r = ctx.reservation
        if r is None or r.settled:
            return
        r.settled = True
        self.limits.settle(r, costing.usd_total, costing.joules or 0.0, tokens)
