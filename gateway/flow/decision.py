"""Choosing where a request goes: the cheapest deployment that is fresh enough.

For a model or group, every deployment is a candidate. Candidates are dropped, each with
a reason kept for the explanation: the request's operation not declared by the deployment
(a 400 when no deployment declares it), freshness unmet, unhealthy (circuit open, or the
backend says so), at capacity with a full queue, prompt + output over the context, expected
time to first token over the request's ``max_ttft_ms``. When every candidate left is
unhealthy they are all tried anyway (panic mode: ``Decision.panic``, ``panic=1`` in
``x-freshet-route``).
The rest are scored by the cost model's quote (``full``: energy + capex share + list
price; ``marginal``: energy only) and ordered by the group's routing policy (a plugin;
default ``cheapest-fresh``). The first is chosen; the others are the fallback list, one
deployment per backend and model (its adapters share its quote and its refusals; the rest
are dropped as ``same_backend``), except that an adapter the backend has not loaded is
quoted with its swap time (``BackendStatus.adapters_loaded``, ``adapter_swap_s``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import msgspec

from gateway.backend import BackendStatus, Deployment, Operation
from gateway.cost import BackendCost, Quote, RequestShape, swap_wait
from gateway.errors import (
    BackendUnavailable,
    ContextLengthExceeded,
    FreshnessUnsatisfiable,
    InvalidRequest,
    RateLimited,
)
from gateway.routing import Candidate, Decision, Need, Policy, Router

# The router sees an estimate of the prompt's tokens (gateway.flow.estimate.estimate_prompt_tokens;
# tests/integration/test_token_estimate.py measures its error against a real tokenizer:
# it overestimates by at most ~5 %). A deployment is dropped for context only when even
# the estimate's lower bound does not fit; in between, the backend counts exactly and
# refuses before its first byte, and the request falls through to the next candidate.
CONTEXT_SLACK = 0.9

ENDPOINTS: dict[str, str] = {
    "chat": "/v1/chat/completions",
    "text_completion": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


class OperationUnsupported(InvalidRequest):
    """No deployment of the requested model serves the request's operation (400)."""

    code = "unsupported_operation"


class CapabilityUnsupported(InvalidRequest):
    """No deployment of the requested model has a capability the request needs (tools,
    structured output, images: 400)."""

    code = "capability_unsupported"


# Which part of an OpenAI chat request needs each capability (the error's ``param``).
CAPABILITY_PARAMS = {"tools": "tools", "json_schema": "response_format", "vision": "messages"}


class OutputEstimate:
    """Expected output tokens when a request sets no max: a running average per group
    and key of what such requests really produced."""

    def __init__(self, default: int, weight: float = 0.1) -> None:
        self._default = float(default)
        self._weight = weight
        self._avg: dict[tuple[str | None, str | None], float] = {}

    def expect(self, group: str | None, key: str | None) -> int:
        return max(1, round(self._avg.get((group, key), self._default)))

    def observe(self, group: str | None, key: str | None, tokens: int) -> None:
        old = self._avg.get((group, key), self._default)
        self._avg[(group, key)] = old + self._weight * (tokens - old)


def decide(
    name: str,
    deployments: Sequence[Deployment],
    shape: RequestShape,
    need: Need,
    statuses: Mapping[str, BackendStatus],
    costs: Mapping[str, BackendCost],
    unavailable: Collection[str],
    router: Router,
    router_name: str,
    policy: Policy = "full",
    max_ttft_ms: float | None = None,
    max_tokens: int | None = None,
    operation: Operation | None = None,
    context_tokens: int | None = None,
    needs: Collection[str] = frozenset(),
) -> Decision:
    """Drop, score and order ``deployments``; ``unavailable`` holds the backends whose
    circuit is open; ``max_tokens`` is the request's own limit (the context check counts
    it; the quote counts the expected output in ``shape``); ``operation`` what the request
    asks for (``None``: not checked), which a deployment must declare; ``context_tokens``
    what must fit the context when that is not the whole prompt (embeddings: the longest
    input, each being embedded on its own); ``needs`` the capabilities it needs
    (:meth:`GenerationRequest.needs`), which a deployment must declare."""
    eligible: list[Candidate] = []
    dropped: list[Candidate] = []
    sick: list[Candidate] = []  # unhealthy, and fit otherwise: tried in panic mode
    keep, drop = eligible.append, dropped.append
    need_date = need.min_cutoff
    prompt_need = shape.prompt_tokens if context_tokens is None else context_tokens
    context_need = int(prompt_need * CONTEXT_SLACK) + (max_tokens or 0)
    marginal = policy == "marginal"
    max_ttft_s = math.inf if max_ttft_ms is None else max_ttft_ms / 1000
    quotes: dict[tuple[str, str | None], Quote] = {}
    for rank, dep in enumerate(deployments):
        backend_id = dep.backend_id
        status = statuses[backend_id]
        cutoff = dep.knowledge_cutoff
        unhealthy = not status.healthy or backend_id in unavailable
        if operation is not None and operation not in dep.operations:
            reason = f"operation(no {operation})"
        elif needs and not dep.capabilities.issuperset(needs):
            reason = f"capability({','.join(sorted(set(needs) - dep.capabilities))})"
        elif need_date is not None and (cutoff is None or cutoff < need_date):
            reason = f"freshness(cutoff {cutoff.isoformat() if cutoff else 'unknown'})"
        elif status.saturated:
            reason = "unhealthy" if unhealthy else "at_capacity"
        elif context_need > dep.max_context:
            reason = (
                "unhealthy"
                if unhealthy
                else f"context(~{prompt_need}+{max_tokens or 0}>{dep.max_context})"
            )
        else:
            # A backend's deployments share its quote, but for an adapter that is not
            # loaded, whose quote counts the swap.
            adapter = dep.adapter
            swap = adapter is not None and swap_wait(with_adapter(shape, adapter), status) > 0
            quote_key = (backend_id, adapter if swap else None)
            quote = quotes.get(quote_key)
            if quote is None:
                quote = quotes[quote_key] = costs[backend_id].quote(
                    with_adapter(shape, adapter) if swap else shape, status
                )
            if quote.ttft_s <= max_ttft_s:
                candidate = Candidate(
                    score=quote.usd_energy if marginal else quote.usd_total,
                    load=status.running + status.waiting,
                    rank=rank,
                    deployment=dep,
                    quote=quote,
                )
                if not unhealthy:
                    keep(candidate)
                    continue
                sick.append(candidate)
                reason = "unhealthy"
            else:
                reason = (
                    "unhealthy"
                    if unhealthy
                    else f"ttft(~{quote.ttft_s * 1000:.0f}ms>{max_ttft_ms or 0:.0f}ms)"
                )
                # The quote that was too slow stays with it, for /freshet/route to show.
                drop(
                    Candidate(
                        load=status.running + status.waiting,
                        rank=rank,
                        deployment=dep,
                        quote=quote,
                        dropped=reason,
                    )
                )
                continue
        drop(
            Candidate(
                load=status.running + status.waiting, rank=rank, deployment=dep, dropped=reason
            )
        )
    panic = not eligible and bool(sick)
    if panic:
        # Every candidate left is unhealthy: try them anyway (Envoy's panic mode) rather
        # than refuse; the ones that fit on every other count, cheapest first as usual.
        eligible = sick
        tried = {id(c.deployment) for c in sick}
        dropped = [c for c in dropped if id(c.deployment) not in tried]
    if not eligible:
        raise _nothing_eligible(name, dropped, need, shape, operation, needs)
    ordered = router.order(eligible, name)
    if len(ordered) > 1:
        ordered = _one_per_backend(ordered, dropped)
    return Decision(
        ordered=ordered,
        dropped=dropped,
        need=need,
        policy=policy,
        router=router_name,
        panic=panic,
    )


def with_adapter(shape: RequestShape, adapter: str | None) -> RequestShape:
    """``shape`` for a deployment with ``adapter`` (``shape`` itself when it is the same)."""
    if shape.adapter == adapter:
        return shape
    return msgspec.structs.replace(shape, adapter=adapter)


def _one_per_backend(ordered: list[Candidate], dropped: list[Candidate]) -> list[Candidate]:
    """A backend's adapters of one model share its quote and its refusals (queue,
    context): only the best of them stays in the fallback list, so a refusal falls through
    to another backend instead of spending the retry budget on the same one. The others
    are dropped as ``same_backend``."""
    seen = {(c.deployment.backend_id, c.deployment.model) for c in ordered}
    if len(seen) == len(ordered):  # no backend's model twice: the usual case
        return ordered
    seen.clear()
    kept: list[Candidate] = []
    for c in ordered:
        key = (c.deployment.backend_id, c.deployment.model)
        if key in seen:
            c.dropped = "same_backend"
            dropped.append(c)
        else:
            seen.add(key)
            kept.append(c)
    return kept


def _nothing_eligible(
    name: str,
    dropped: list[Candidate],
    need: Need,
    shape: RequestShape,
    operation: Operation | None = None,
    needs: Collection[str] = frozenset(),
) -> Exception:
    serving = [c for c in dropped if not (c.dropped or "").startswith("operation")]
    capable = [c for c in serving if not (c.dropped or "").startswith("capability")]
    if serving and not capable and needs:
        have = {n for c in serving for n in c.deployment.capabilities}
        # What no deployment has at all; else each lacks a different one of them.
        missing = sorted(set(needs) - have) or sorted(needs)
        return CapabilityUnsupported(
            f"no deployment of {name!r} can serve this request: it needs "
            f"{', '.join(missing)} (its {', '.join(CAPABILITY_PARAMS.get(n, n) for n in missing)})"
            f", and what its deployments can do is: {', '.join(sorted(have)) or 'text only'}",
            param=CAPABILITY_PARAMS.get(missing[0], missing[0]),
        )
    if dropped and not serving and operation is not None:
        served = sorted({op for c in dropped for op in c.deployment.operations})
        return OperationUnsupported(
            f"no deployment of {name!r} serves {operation} ({ENDPOINTS.get(operation, '?')}); "
            f"its deployments serve: {', '.join(served) or 'nothing'}",
            param="model",
        )
    fresh = [c for c in capable if not (c.dropped or "").startswith("freshness")]
    if not fresh:
        cutoffs = [c.deployment.knowledge_cutoff for c in capable if c.deployment.knowledge_cutoff]
        freshest = max(cutoffs).isoformat() if cutoffs else "unknown"
        return FreshnessUnsatisfiable(
            f"no deployment of {name!r} is fresh enough: the request needs a knowledge cutoff "
            f"{need.describe()}, the freshest available is {freshest}",
            param="freshness",
        )
    if all((c.dropped or "").startswith("context") for c in fresh):
        largest = max(c.deployment.max_context for c in fresh)
        if operation == "embeddings":  # each input is embedded on its own
            return ContextLengthExceeded(
                f"an input is too long for every deployment of {name!r} "
                f"(largest context: {largest} tokens)",
                param="input",
            )
        return ContextLengthExceeded(
            f"the prompt (about {shape.prompt_tokens} tokens) and max_tokens do not fit the "
            f"context of any deployment of {name!r} (largest: {largest} tokens)",
            param="messages",
        )
    reasons = "; ".join(f"{c.deployment.backend_id}: {c.dropped}" for c in dropped)
    if any(c.dropped == "at_capacity" for c in fresh):
        # Busy, not broken: the client should come back shortly.
        return RateLimited(f"every deployment of {name!r} is at capacity ({reasons})")
    return BackendUnavailable(f"no deployment of {name!r} can take the request now ({reasons})")
