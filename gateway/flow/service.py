"""The request flow between the HTTP layer and the backends: choose, open, meter, record."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from msgspec import Struct

from gateway import protocol as p
from gateway.backend import Deployment, GenerationRequest
from gateway.cost import Costing, Metering, RequestShape
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    FreshetError,
    InvalidRequest,
)
from gateway.flow.context import RequestContext
from gateway.flow.decision import OutputEstimate, decide
from gateway.flow.dispatch import Opened, chain, open_stream
from gateway.flow.freshness import resolve_need
from gateway.flow.streaming import collect, to_usage
from gateway.outcome import Attempt, Outcome
from gateway.protocol import Freshness
from gateway.routing import Decision, Router
from gateway.settings import GroupPolicy
from gateway.state.keys import ApiKey

HEADER_TTFT = "x-freshet-max-ttft-ms"

if TYPE_CHECKING:
    from gateway.api.runtime import Runtime


_WORD = re.compile(r"[^\W\d_]+")
# A chat template adds a preamble (often a default system prompt) and a few tokens a
# message; measured on SmolLM2 (tests/integration/test_token_estimate.py).
CHAT_BASE_TOKENS = 24
MESSAGE_TOKENS = 6


def _text_tokens(text: str) -> int:
    # BPE vocabularies keep common words whole, split long words, and give digits and
    # punctuation tokens of their own.
    words = sum(1 + len(w) // 9 for w in _WORD.findall(text))
    digits = sum(c.isdigit() for c in text)
    symbols = sum(1 for c in text if not c.isalnum() and not c.isspace())
    return round(words * 1.05 + digits + symbols * 0.6)


def estimate_prompt_tokens(request: GenerationRequest) -> int:
    """A cheap estimate of the prompt's tokens, before any backend counts them exactly:
    within about 20 % for English prose, code, numbers and JSON; low for other languages."""
    if request.prompt is not None:
        return max(1, _text_tokens(request.prompt))
    return CHAT_BASE_TOKENS + sum(
        MESSAGE_TOKENS + _text_tokens(m.content) for m in request.messages
    )


DEFAULT_POLICY = GroupPolicy()


class Routed(Struct, kw_only=True):
    """A request on its way: the backend stream, how it is going, why it went there."""

    opened: Opened
    outcome: Outcome
    decision: Decision

    def route_header(self) -> str:
        return self.decision.header(
            served=self.opened.deployment.backend_id, failed_over=len(self.opened.attempts)
        )


class Service:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        settings = runtime.settings
        routers = runtime.plugins.routers()
        self._routers: dict[str, Router] = {}
        for group, policy in settings.group_policies.items():
            if policy.router not in routers:
                raise ConfigError(
                    f"unknown router {policy.router!r} (installed: {sorted(routers)})",
                    file=settings.config_file,
                    key=f"groups.{group}.router",
                )
        for name, factory in routers.items():
            self._routers[name] = factory()
        self.outputs = OutputEstimate(settings.routing.default_output_tokens)
        self._max_attempts = settings.routing.max_attempts

    def context(
        self,
        request_id: str,
        model: str,
        operation: str,
        stream: bool,
        *,
        freshness: Freshness | None = None,
        max_ttft_ms: float | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: ApiKey | None = None,
    ) -> RequestContext:
        self._rt.telemetry.requested(request_id, model)
        entry = self._rt.fleet.catalog.resolve(model)  # 404 before anything else
        headers = headers or {}
        if max_ttft_ms is None and HEADER_TTFT in headers:
            try:
                max_ttft_ms = float(headers[HEADER_TTFT])
            except ValueError:
                raise InvalidRequest(
                    f"{HEADER_TTFT} must be a number of milliseconds", param=HEADER_TTFT
                ) from None
        return RequestContext(
            request_id=request_id,
            arrived=time.time(),
            requested_model=model,
            group=entry.name if entry.kind == "group" else None,
            operation=operation,
            stream=stream,
            freshness=freshness,
            max_ttft_ms=max_ttft_ms,
            headers=headers,
            key=api_key.name if api_key is not None else None,
            api_key=api_key,
        )

    async def decide(
        self,
        ctx: RequestContext,
        gen: GenerationRequest,
        exclude: frozenset[str] = frozenset(),
        prompt_estimate: int | None = None,
    ) -> Decision:
        """The route for a request; also the dry run of ``/freshet/route``."""
        if not self._rt.ready.is_set():
            raise BackendUnavailable("backends are still loading; retry shortly")
        entry = self._rt.fleet.catalog.resolve(ctx.requested_model)
        policy = self._rt.settings.group_policies.get(entry.name, DEFAULT_POLICY)
        key_default = ctx.api_key.freshness if ctx.api_key is not None else None
        need = resolve_need(ctx.freshness, ctx.headers, key_default, policy.freshness)
        shape = RequestShape(
            prompt_tokens=prompt_estimate or estimate_prompt_tokens(gen),
            output_tokens=gen.max_tokens or self.outputs.expect(ctx.group, ctx.key),
        )
        deployments = [d for d in entry.deployments if d.backend_id not in exclude]
        backends = self._rt.fleet.backends
        statuses = {d.backend_id: await backends[d.backend_id].status() for d in deployments}
        return decide(
            entry.name,
            deployments,
            shape,
            need,
            statuses,
            self._rt.accounting.costs,
            self._rt.health.unavailable(),
            self._routers[policy.router],
            policy.router,
            policy.policy,
            ctx.max_ttft_ms,
            gen.max_tokens,
        )

    async def open(
        self, ctx: RequestContext, gen: GenerationRequest, exclude: frozenset[str] = frozenset()
    ) -> Routed:
        estimate = estimate_prompt_tokens(gen)
        decision = await self._rt.telemetry.route(
            ctx.request_id, gen, self.decide(ctx, gen, exclude, estimate)
        )
        # The key's rate limits and budget: reserve the chosen quote (429/402 when over).
        output = gen.max_tokens or self.outputs.expect(ctx.group, ctx.key)
        await self._rt.admission.admit(ctx, decision.ordered[0].quote, estimate + output)
        accounting = self._rt.accounting

        def begin(dep: Deployment) -> Metering:
            self._rt.telemetry.attempt(ctx.request_id, dep, attempts)
            return accounting.begin(dep.backend_id, ctx.request_id, estimate)

        attempts: list[Attempt] = []
        candidates = [c.deployment for c in decision.ordered[: self._max_attempts]]
        try:
            opened = await open_stream(
                self._rt.fleet, candidates, gen, begin, attempts, self._rt.health
            )
        except FreshetError as exc:
            if attempts:  # it reached a backend: one record, for the last one tried
                last = next(d for d in candidates if d.backend_id == attempts[-1].backend_id)
                self._record_failure(ctx, last, exc, len(attempts) - 1)
            self._rt.admission.release(ctx)  # no record, no cost: the reservation goes back
            raise
        except BaseException:
            self._rt.admission.release(ctx)  # cancelled before any backend answered
            raise
        self._rt.telemetry.answered(ctx.request_id)
        outcome = Outcome(
            metering=opened.metering,
            ttft_s=time.time() - ctx.arrived,
            prompt_tokens_estimate=estimate,
        )
        return Routed(opened=opened, outcome=outcome, decision=decision)

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
        if outcome.usage is not None and outcome.error is None:
            self.outputs.observe(ctx.group, ctx.key, outcome.usage.completion_tokens)
        return to_usage(outcome.usage, costing)

    async def complete(self, ctx: RequestContext, gen: GenerationRequest) -> tuple[Routed, p.Usage]:
        """Non-streaming: nothing reaches the client until the end, so a failure anywhere
        before then may still fall back to the remaining candidates."""
        tried: set[str] = set()
        while True:
            routed = await self.open(ctx, gen, frozenset(tried))
            opened, outcome = routed.opened, routed.outcome
            try:
                await collect(chain(opened.first, opened.rest), outcome)
            except FreshetError as exc:
                tried.add(opened.deployment.backend_id)
                tried.update(a.backend_id for a in opened.attempts)
                if exc.status >= 500:
                    self._rt.health.failure(opened.deployment.backend_id)
                if len(tried) >= self._max_attempts or len(routed.decision.ordered) <= 1:
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
            return routed, self.finalize(ctx, opened, outcome)


def cost_headers(headers: dict[str, str], usage: p.Usage) -> None:
    if usage.energy_joules is not None:
        headers["x-freshet-energy-joules"] = f"{usage.energy_joules:.6g}"
    if usage.cost is not None:
        headers["x-freshet-cost-usd"] = f"{usage.cost:.9f}"


__all__ = ["Costing", "Service", "cost_headers", "estimate_prompt_tokens"]
