"""What routing produces and what a routing policy is (the contract between the router in
:mod:`gateway.flow.decision`, routing-policy plugins and the observers of a request).

A request's freshness :class:`Need`, every deployment considered as a :class:`Candidate`
(eligible with its quote, or dropped with a reason), and the :class:`Decision` that orders
the eligible ones. A :class:`Router` (registered by ``register_routers``) orders them.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal, Protocol

from msgspec import Struct

from gateway.backend import Deployment
from gateway.cost import Quote

Policy = Literal["full", "marginal"]


class Need(Struct, kw_only=True, frozen=True):
    min_cutoff: dt.date | None
    source: str  # body | header | key | group | none

    def describe(self) -> str:
        return f">= {self.min_cutoff.isoformat()} ({self.source})" if self.min_cutoff else "none"


NO_NEED = Need(min_cutoff=None, source="none")


# Made for every candidate of every request and never part of a reference cycle:
# untracked by the garbage collector, which keeps its pauses out of the router's tail.
# Ordered by (score, load, rank): cheapest first, ties to the least loaded, then the
# configured order; ``rank`` is unique, so comparisons never reach the deployment and
# sorting runs in C.
class Candidate(Struct, kw_only=True, gc=False, order=True):
    score: float = math.inf
    load: int = 0
    rank: int = 0  # position among the model's deployments
    deployment: Deployment
    quote: Quote | None = None
    dropped: str | None = None


class Decision(Struct, kw_only=True):
    ordered: list[Candidate]  # eligible, best first: [0] is chosen, the rest fall back
    dropped: list[Candidate]
    need: Need
    policy: Policy
    router: str
    panic: bool = False  # every candidate was unhealthy: the unhealthy ones are tried anyway

    def served(self, backend_id: str | None) -> Candidate:
        """The candidate that served (the first, unless a fallback did)."""
        if backend_id is not None:
            for candidate in self.ordered:
                if candidate.deployment.backend_id == backend_id:
                    return candidate
        return self.ordered[0]

    def header(self, served: str | None = None, failed_over: int = 0) -> str:
        # The quote is the one of the deployment that served, not of the first choice.
        chosen = self.served(served)
        dep = chosen.deployment
        parts = [
            self.router,
            f"chosen={label(dep) if served in (None, dep.backend_id) else served}",
            f"quote_usd={chosen.quote.usd_total:.3g}" if chosen.quote else "quote_usd=?",
            f"candidates={len(self.ordered) + len(self.dropped)}",
            f"failed_over={failed_over}",
        ]
        if self.panic:
            parts.append("panic=1")
        if self.dropped:
            reasons = ",".join(f"{label(c.deployment)}:{c.dropped}" for c in self.dropped)
            parts.append(f"dropped={reasons}")
        return "; ".join(parts)


def label(dep: Deployment) -> str:
    """A deployment in ``x-freshet-route``: its backend, and its adapter's name if any
    (``asic/llama-3.1-8b:news-2025``)."""
    return f"{dep.backend_id}/{dep.name}" if dep.adapter else dep.backend_id


class Router(Protocol):
    """A routing policy: orders the eligible candidates (best first)."""

    def order(self, candidates: list[Candidate], group: str) -> list[Candidate]: ...
