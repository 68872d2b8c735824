"""``/freshet/route``: dry-run the router for a request and show every candidate."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import FromQuery, JSONBody, QueryParameter
from msgspec import Struct

from gateway import protocol as p
from gateway.api.edge import request_options
from gateway.api.runtime import Runtime
from gateway.backend import GenerationRequest
from gateway.cost import Quote
from gateway.flow.requests import from_chat
from gateway.routing import Candidate, Decision, label


class CandidateView(Struct, kw_only=True):
    backend: str
    deployment: str
    knowledge_cutoff: dt.date | None
    load: int
    eligible: bool
    rank: int | None
    reason: str | None
    quote_usd: float | None
    quote: Quote | None


class RouteView(Struct, kw_only=True):
    model: str
    router: str
    policy: str
    need: str
    chosen: str
    # The deployment chosen as x-freshet-route names it: its backend, and its adapter if any.
    chosen_deployment: str
    fallbacks: list[str]
    candidates: list[CandidateView]


def _view(c: Candidate, rank: int | None) -> CandidateView:
    return CandidateView(
        backend=c.deployment.backend_id,
        deployment=c.deployment.name,
        knowledge_cutoff=c.deployment.knowledge_cutoff,
        load=c.load,
        eligible=rank is not None,
        rank=rank,
        reason=c.dropped,
        quote_usd=c.quote.usd_total if c.quote else None,
        quote=c.quote,
    )


def _render(model: str, decision: Decision) -> RouteView:
    ordered = [c.deployment.backend_id for c in decision.ordered]
    return RouteView(
        model=model,
        router=decision.router,
        policy=decision.policy,
        need=decision.need.describe(),
        chosen=ordered[0],
        chosen_deployment=label(decision.ordered[0].deployment),
        fallbacks=ordered[1:],
        candidates=[_view(c, i) for i, c in enumerate(decision.ordered)]
        + [_view(c, None) for c in decision.dropped],
    )


class RouteController(Controller):
    path = "/freshet/route"
    tags = ["Freshet"]

    @get(summary="Dry-run the router for a model (query: model, prompt_tokens, max_tokens)")
    async def route_get(
        self,
        request: Request[Any, Any, Any],
        model: Annotated[str, QueryParameter(max_length=p.MAX_NAME)],
        prompt_tokens: Annotated[int, QueryParameter(ge=0, le=p.INT32_MAX)] = 16,
        max_tokens: Annotated[int | None, QueryParameter(ge=1, le=p.INT32_MAX)] = None,
        min_knowledge_cutoff: FromQuery[dt.date | None] = None,
        max_staleness_days: Annotated[int | None, QueryParameter(ge=0)] = None,
        max_ttft_ms: Annotated[float | None, QueryParameter(gt=0)] = None,
    ) -> RouteView:
        runtime: Runtime = request.app.state.runtime
        service = runtime.service
        options = request_options(request.headers)
        freshness = p.Freshness(
            min_knowledge_cutoff=min_knowledge_cutoff, max_staleness_days=max_staleness_days
        )
        ctx = service.context(
            "dry-run",
            model,
            "chat",
            False,
            freshness=freshness,
            header_freshness=options.freshness,
            max_ttft_ms=max_ttft_ms if max_ttft_ms is not None else options.max_ttft_ms,
        )
        gen = GenerationRequest(
            request_id="dry-run", operation="chat", model=model, max_tokens=max_tokens
        )
        decision = await service.decide(ctx, gen, prompt_estimate=prompt_tokens)
        return _render(model, decision)

    @post(status_code=200, summary="Dry-run the router for a chat completion request body")
    async def route_post(
        self, request: Request[Any, Any, Any], data: JSONBody[p.ChatCompletionRequest]
    ) -> RouteView:
        runtime: Runtime = request.app.state.runtime
        service = runtime.service
        options = request_options(request.headers)
        ctx = service.context(
            "dry-run",
            data.model,
            "chat",
            False,
            freshness=data.freshness,
            header_freshness=options.freshness,
            max_ttft_ms=data.max_ttft_ms if data.max_ttft_ms is not None else options.max_ttft_ms,
        )
        return _render(data.model, await service.decide(ctx, from_chat(data, "dry-run")))
