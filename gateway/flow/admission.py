"""Admission of one request against its key's limits, and its settlement when it ends.

The service calls :meth:`Admission.admit` once per request, after routing (the budget
reserves the chosen deployment's quote) and before anything is sent; the accounting calls
:meth:`Admission.settle` with the real costing when the request's usage record is made.
Requests without a key, or with a key without limits, cost nothing here.
"""

from __future__ import annotations

from gateway.cost import Costing, Quote
from gateway.flow.context import RequestContext
from gateway.state.limits import Limits

_NOTHING = Costing(joules=None, energy_source=None)


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

    def follow(self, ctx: RequestContext, quote: Quote | None) -> None:
        """The reservation holds the quote of the deployment that serves (a fallback)."""
        r = ctx.reservation
        if r is None or r.settled or quote is None:
            return
        self.limits.reprice(r, quote.usd_total, quote.joules)

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
