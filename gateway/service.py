"""The request flow between the HTTP layer and the backends: choose, open, meter, record."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway import protocol as p
from gateway.accounting import RequestContext
from gateway.backend import Deployment, GenerationRequest
from gateway.cost import Costing, Metering
from gateway.dispatch import Attempt, Opened, chain, open_stream
from gateway.errors import BackendError, BackendUnavailable, FreshetError
from gateway.streaming import Outcome, collect, to_usage

if TYPE_CHECKING:
    from gateway.runtime import Runtime


def estimate_prompt_tokens(request: GenerationRequest) -> int:
    """A cheap estimate (about 4 characters a token) until the backend reports the count."""
    chars = len(request.prompt or "") + sum(len(m.content) + 8 for m in request.messages)
    return max(1, chars // 4)


class Service:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _candidates(self, model: str, skip: int = 0) -> tuple[Deployment, ...]:
        return self._rt.fleet.catalog.resolve(model).deployments[skip:]

    def context(self, request_id: str, model: str, operation: str, stream: bool) -> RequestContext:
        entry = self._rt.fleet.catalog.resolve(model)  # 404 before anything else
        return RequestContext(
            request_id=request_id,
            arrived=time.time(),
            requested_model=model,
            group=entry.name if entry.kind == "group" else None,
            operation=operation,
            stream=stream,
        )

    async def open(
        self, ctx: RequestContext, gen: GenerationRequest, skip: int = 0
    ) -> tuple[Opened, Outcome]:
        if not self._rt.ready.is_set():
            raise BackendUnavailable("backends are still loading; retry shortly")
        estimate = estimate_prompt_tokens(gen)
        accounting = self._rt.accounting

        def begin(dep: Deployment) -> Metering:
            return accounting.begin(dep.backend_id, ctx.request_id, estimate)

        attempts: list[Attempt] = []
        candidates = self._candidates(ctx.requested_model, skip)
        try:
            opened = await open_stream(self._rt.fleet, candidates, gen, begin, attempts)
        except FreshetError as exc:
            if attempts:  # it reached a backend: one record, for the last one tried
                last = next(d for d in candidates if d.backend_id == attempts[-1].backend_id)
                self._record_failure(ctx, last, exc, len(attempts) - 1)
            raise
        outcome = Outcome(
            metering=opened.metering,
            ttft_s=time.time() - ctx.arrived,
            prompt_tokens_estimate=estimate,
        )
        return opened, outcome

    def _record_failure(
        self, ctx: RequestContext, dep: Deployment, error: FreshetError, fallbacks: int
    ) -> None:
        kind = self._rt.fleet.get(dep.backend_id).kind
        outcome = Outcome(error=error)
        self._rt.accounting.finish(ctx, dep, kind, outcome, fallbacks)

    def finalize(self, ctx: RequestContext, opened: Opened, outcome: Outcome) -> p.Usage:
        costing = self._rt.accounting.finish(
            ctx, opened.deployment, opened.backend.kind, outcome, len(opened.attempts)
        )
        return to_usage(outcome.usage, costing)

    async def complete(
        self, ctx: RequestContext, gen: GenerationRequest
    ) -> tuple[Opened, Outcome, p.Usage]:
        """Non-streaming: nothing reaches the client until the end, so a failure anywhere
        before then may still fall back to the remaining candidates."""
        skip = 0
        while True:
            opened, outcome = await self.open(ctx, gen, skip)
            try:
                await collect(chain(opened.first, opened.rest), outcome)
            except FreshetError as exc:
                remaining = self._candidates(ctx.requested_model)
                skip = remaining.index(opened.deployment) + 1
                if skip >= len(remaining):
                    outcome.error = exc
                    self.finalize(ctx, opened, outcome)
                    raise
                if outcome.metering is not None:
                    outcome.metering.end(None)
                continue
            except Exception as exc:
                outcome.error = BackendError(f"backend {opened.deployment.backend_id} failed")
                self.finalize(ctx, opened, outcome)
                raise outcome.error from exc
            except BaseException:
                outcome.client_disconnected = True
                self.finalize(ctx, opened, outcome)
                raise
            return opened, outcome, self.finalize(ctx, opened, outcome)


def cost_headers(headers: dict[str, str], usage: p.Usage) -> None:
    if usage.energy_joules is not None:
        headers["x-freshet-energy-joules"] = f"{usage.energy_joules:.6g}"
    if usage.cost is not None:
        headers["x-freshet-cost-usd"] = f"{usage.cost:.9f}"


__all__ = ["Costing", "Service", "cost_headers", "estimate_prompt_tokens"]
