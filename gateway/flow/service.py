"""The request flow between the HTTP layer and the backends: choose, open, meter, record."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import NamedTuple

import msgspec
from msgspec import Struct

from gateway import protocol as p
from gateway.backend import (
    Backend,
    BackendStatus,
    Chunk,
    Deployment,
    Embedder,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationRequest,
)
from gateway.cost import Costing, Metering, RequestShape
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    FreshetError,
)
from gateway.flow.accounting import Accounting, FailedAttempt
from gateway.flow.admission import Admission
from gateway.flow.context import RequestContext
from gateway.flow.decision import OutputEstimate, decide
from gateway.flow.dispatch import Call, Opened, open_stream, stream
from gateway.flow.estimate import estimate_prompt_tokens
from gateway.flow.fleet import Fleet
from gateway.flow.freshness import resolve_need
from gateway.flow.observer import NO_OBSERVER, RequestObserver
from gateway.flow.streaming import collect, to_usage
from gateway.outcome import Attempt, Outcome
from gateway.protocol import Freshness
from gateway.routing import Decision, Router
from gateway.settings import GroupPolicy, Settings
from gateway.state.health import HealthState
from gateway.state.keys import ApiKey

DEFAULT_POLICY = GroupPolicy()


class Work(NamedTuple):
    """A request that is not a stream of tokens (embeddings): how each candidate is called
    (:data:`Call`), and its size for the router, admission and metering: the prompt's
    tokens in all, and the most that must fit one deployment's context. It generates
    nothing, so its quote and reservation count no output."""

    call: Call
    prompt_tokens: int
    context_tokens: int


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
    """Routes, admits, dispatches, meters and records one request at a time; it gets every
    part it uses here, and tells the request's observer (in its context) what happens."""

    def __init__(
        self,
        settings: Settings,
        fleet: Fleet,
        routers: Mapping[str, Callable[[], Router]],
        accounting: Accounting,
        admission: Admission,
        health: HealthState,
        ready: Callable[[], bool],
    ) -> None:
        self._fleet = fleet
        self._catalog = fleet.catalog
        self._backends = fleet.backends
        self._policies = settings.group_policies
        self._accounting = accounting
        self._admission = admission
        self._health = health
        self._ready = ready
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
        header_freshness: Freshness | None = None,
        max_ttft_ms: float | None = None,
        api_key: ApiKey | None = None,
        observer: RequestObserver = NO_OBSERVER,
    ) -> RequestContext:
        observer.requested(model)
        entry = self._catalog.resolve(model)  # 404 before anything else
        return RequestContext(
            request_id=request_id,
            arrived=time.time(),
            requested_model=model,
            group=entry.name if entry.kind == "group" else None,
            operation=operation,
            stream=stream,
            freshness=freshness,
            header_freshness=header_freshness,
            max_ttft_ms=max_ttft_ms,
            key=api_key.name if api_key is not None else None,
            api_key=api_key,
            observer=observer,
        )

    async def decide(
        self,
        ctx: RequestContext,
        gen: GenerationRequest,
        exclude: frozenset[str] = frozenset(),
        prompt_estimate: int | None = None,
        work: Work | None = None,
    ) -> Decision:
        """The route for a request; also the dry run of ``/freshet/route``."""
        if not self._ready():
            raise BackendUnavailable("backends are still loading; retry shortly")
        entry = self._catalog.resolve(ctx.requested_model)
        policy = self._policies.get(entry.name, DEFAULT_POLICY)
        key_default = ctx.api_key.freshness if ctx.api_key is not None else None
        need = resolve_need(ctx.freshness, ctx.header_freshness, key_default, policy.freshness)
        shape = RequestShape(
            prompt_tokens=prompt_estimate or estimate_prompt_tokens(gen),
            output_tokens=self._output(ctx, gen, work),
        )
        deployments = [d for d in entry.deployments if d.backend_id not in exclude]
        backends = self._backends
        # Once per backend (its adapter deployments share its status).
        statuses: dict[str, BackendStatus] = {}
        for d in deployments:
            backend_id = d.backend_id
            if backend_id not in statuses:
                statuses[backend_id] = await backends[backend_id].status()
        return decide(
            entry.name,
            deployments,
            shape,
            need,
            statuses,
            self._accounting.quotes,
            self._health.unavailable(),
            self._routers[policy.router],
            policy.router,
            policy.policy,
            ctx.max_ttft_ms,
            gen.max_tokens,
            gen.operation,
            work.context_tokens if work is not None else None,
            gen.needs(),
        )

    def _output(self, ctx: RequestContext, gen: GenerationRequest, work: Work | None) -> int:
        """The output tokens to expect: none for work that generates nothing."""
        if work is not None:
            return 0
        return gen.max_tokens or self.outputs.expect(ctx.group, ctx.key)

    async def open(
        self,
        ctx: RequestContext,
        gen: GenerationRequest,
        exclude: frozenset[str] = frozenset(),
        earlier: Earlier | None = None,
        work: Work | None = None,
    ) -> Routed:
        """Route and dispatch until a backend's first chunk. ``earlier``: what a
        non-streaming request's previous tries left (it is admitted already, and any record
        made here carries them; the client takes the answer whole, so backends may hand it
        over in bigger chunks: :attr:`GenerationRequest.whole`); ``work``: a request that is
        not a generation."""
        estimate = work.prompt_tokens if work is not None else estimate_prompt_tokens(gen)
        observer = ctx.observer
        observer.routing(gen)
        try:
            decision = await self.decide(ctx, gen, exclude, estimate, work)
        except BaseException as exc:
            observer.routed(None, exc)
            raise
        observer.routed(decision, None)
        # The key's rate limits and budget: reserve the chosen quote (429/402 when over).
        output = self._output(ctx, gen, work)
        await self._admission.admit(ctx, decision.ordered[0].quote, estimate + output)
        if earlier is not None and earlier.failed:  # a retry: admitted already
            self._admission.follow(ctx, decision.ordered[0].quote)
        accounting = self._accounting

        def begin(dep: Deployment) -> Metering:
            observer.attempting(dep, attempts)
            return accounting.begin(dep.backend_id, ctx.request_id, estimate)

        attempts: list[Attempt] = []
        candidates = [c.deployment for c in decision.ordered[: self._max_attempts]]
        try:
            opened = await open_stream(
                self._fleet,
                candidates,
                gen,
                begin,
                attempts,
                self._health,
                work.call if work is not None else stream,
                whole=earlier is not None,
            )
        except FreshetError as exc:
            if attempts:  # it reached a backend: one record, for the last one tried
                last = next(d for d in candidates if d.backend_id == attempts[-1].backend_id)
                self._record_failure(ctx, last, exc, attempts[:-1], earlier)
            elif earlier is not None and earlier.failed:
                self._record_earlier(ctx, earlier)
            self._admission.release(ctx)  # no record, no cost: the reservation goes back
            raise
        except BaseException:
            if earlier is not None and earlier.failed:
                self._record_earlier(ctx, earlier)
            self._admission.release(ctx)  # cancelled before any backend answered
            raise
        observer.answered()
        served = opened.deployment.backend_id
        if served != decision.ordered[0].deployment.backend_id:
            # A fallback serves: the key's reservation holds its quote, not the first's.
            self._admission.follow(ctx, decision.served(served).quote)
        outcome = Outcome(
            metering=opened.metering,
            ttft_s=time.time() - ctx.arrived,
            prompt_tokens_estimate=estimate,
            quote=decision.served(served).quote,
        )
        return Routed(opened=opened, outcome=outcome, decision=decision)

    def _record_failure(
        self,
        ctx: RequestContext,
        dep: Deployment,
        error: FreshetError,
        refused: list[Attempt],
        earlier: Earlier | None,
    ) -> None:
        kind = self._fleet.get(dep.backend_id).kind
        outcome = Outcome(error=error)
        failed = earlier.failed if earlier is not None else []
        refused = [*(earlier.refused if earlier is not None else []), *refused]
        self._accounting.finish(
            ctx, dep, kind, outcome, len(failed) + len(refused), failed, refused
        )

    def _record_earlier(self, ctx: RequestContext, earlier: Earlier) -> None:
        """A retry that reached no backend: the request's one record is its last failed
        attempt's, with the others before it."""
        last = earlier.failed[-1]
        failed, refused = earlier.failed[:-1], earlier.refused
        self._accounting.finish(
            ctx,
            last.deployment,
            self._fleet.get(last.deployment.backend_id).kind,
            last.outcome,
            len(failed) + len(refused),
            failed,
            refused,
            served=last.costing,
        )

    def finalize(
        self,
        ctx: RequestContext,
        opened: Opened,
        outcome: Outcome,
        earlier: Earlier | None = None,
    ) -> p.Usage:
        failed = earlier.failed if earlier is not None else []
        refused = [*(earlier.refused if earlier is not None else []), *opened.attempts]
        costing = self._accounting.finish(
            ctx,
            opened.deployment,
            opened.backend.kind,
            outcome,
            len(failed) + len(refused),
            failed,
            refused,
        )
        # What such requests generate teaches the expected output; embeddings generate none.
        generated = ctx.operation != "embeddings"
        if outcome.usage is not None and outcome.error is None and generated:
            self.outputs.observe(ctx.group, ctx.key, outcome.usage.completion_tokens)
        return to_usage(outcome.usage, costing)

    async def complete(
        self, ctx: RequestContext, gen: GenerationRequest, work: Work | None = None
    ) -> tuple[Routed, p.Usage]:
        """Non-streaming: nothing reaches the client until the end, so a failure anywhere
        before then may still fall back to the remaining candidates. Every backend tried
        is in the request's one record; a retry that finds no candidate ends with the
        error that made it retry."""
        earlier = Earlier()
        tried: set[str] = set()
        while True:
            try:
                routed = await self.open(ctx, gen, frozenset(tried), earlier, work)
            except FreshetError:
                if earlier.failed:  # recorded by open(); the client hears the first cause
                    error = earlier.failed[-1].outcome.error
                    assert error is not None
                    raise error from None
                raise
            opened, outcome = routed.opened, routed.outcome
            try:
                await collect(opened.rest, outcome, opened.first)
            except FreshetError as exc:
                served = opened.deployment.backend_id
                tried.add(served)
                tried.update(a.backend_id for a in opened.attempts)
                outcome.error = exc
                left = [c for c in routed.decision.ordered if c.deployment.backend_id not in tried]
                if len(tried) >= self._max_attempts or not left:
                    self.finalize(ctx, opened, outcome, earlier)
                    raise
                costing = self._accounting.end_attempt(outcome)
                outcome.metering = None  # closed: its cost is in ``costing``
                earlier.refused.extend(opened.attempts)
                earlier.failed.append(
                    FailedAttempt(deployment=opened.deployment, outcome=outcome, costing=costing)
                )
                continue
            except Exception as exc:
                outcome.error = BackendError(f"backend {opened.deployment.backend_id} failed")
                self.finalize(ctx, opened, outcome, earlier)
                raise outcome.error from exc
            except BaseException:
                # Cancelled: the client left (or the gateway is stopping, which says so).
                if not outcome.shutdown:
                    outcome.client_disconnected = True
                self.finalize(ctx, opened, outcome, earlier)
                raise
            return routed, self.finalize(ctx, opened, outcome, earlier)

    async def embed(
        self, ctx: RequestContext, request: EmbeddingRequest, prompt_tokens: int, longest: int
    ) -> tuple[Routed, p.Usage, EmbeddingResult]:
        """A non-streaming request that generates nothing (``/v1/embeddings``), through
        :meth:`complete`: routed (to deployments that declare ``embeddings``), admitted,
        metered, recorded and fallen back like any other; ``prompt_tokens`` and
        ``longest`` size it for the router (all inputs, and the longest one)."""
        results: list[EmbeddingResult] = []

        async def call(backend: Backend, routed: GenerationRequest) -> AsyncIterator[Chunk]:
            if not isinstance(backend, Embedder):  # declared embeddings without embed()
                raise BackendError(f"backend {backend.id} declares embeddings but cannot embed")
            sent = msgspec.structs.replace(request, model=routed.model, adapter=routed.adapter)
            result = await backend.embed(sent)
            if len(result.vectors) != request.count:
                got = len(result.vectors)
                raise BackendError(
                    f"backend {backend.id}: {got} vectors for {request.count} inputs"
                )
            results.append(result)
            yield Chunk(finish_reason="stop", usage=result.usage)

        gen = GenerationRequest(
            request_id=request.request_id, operation="embeddings", model=request.model
        )
        routed, usage = await self.complete(ctx, gen, Work(call, prompt_tokens, longest))
        return routed, usage, results[-1]


class Earlier(Struct, kw_only=True):
    """A non-streaming request's tries before the current one."""

    failed: list[FailedAttempt] = msgspec.field(default_factory=list)
    refused: list[Attempt] = msgspec.field(default_factory=list)


def cost_headers(headers: dict[str, str], usage: p.Usage) -> None:
    if usage.energy_joules is not None:
        headers["x-freshet-energy-joules"] = f"{usage.energy_joules:.6g}"
    if usage.cost is not None:
        headers["x-freshet-cost-usd"] = f"{usage.cost:.9f}"


__all__ = ["Costing", "Service", "cost_headers"]
