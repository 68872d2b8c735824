"""``/v1``: the OpenAI-compatible API (chat completions, legacy completions, models)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream
from msgspec import Struct

from gateway import protocol as p
from gateway.accounting import RequestContext
from gateway.api.auth import request_key
from gateway.backend import GenerationRequest
from gateway.dispatch import chain
from gateway.requests import from_chat, from_completion
from gateway.runtime import Runtime
from gateway.service import Routed, Service, cost_headers
from gateway.streaming import sse

_ERRORS: dict[int, ResponseSpec] = {
    status: ResponseSpec(data_container=p.ErrorResponse, description=desc)
    for status, desc in {
        400: "Malformed or invalid request (`param` names the field)",
        404: "Unknown model (`model_not_found`)",
        413: "Request body over the configured limit",
        422: "No deployment is fresh enough (`freshness_unsatisfiable`)",
        429: "Backend queue full (`Retry-After`)",
        503: "No backend could serve the request",
    }.items()
}
_SSE = "text/event-stream"
_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _service(request: Request[Any, Any, Any]) -> Service:
    runtime: Runtime = request.app.state.runtime
    return runtime.service


def _request_id(request: Request[Any, Any, Any]) -> str:
    request_id: str = request.scope["state"]["request_id"]
    return request_id


def _headers(routed: Routed) -> dict[str, str]:
    dep = routed.opened.deployment
    headers = {
        "x-freshet-backend": dep.backend_id,
        "x-freshet-route": routed.route_header(),
    }
    if dep.knowledge_cutoff:
        headers["x-freshet-knowledge-cutoff"] = dep.knowledge_cutoff.isoformat()
    return headers


async def _stream_response(
    service: Service,
    ctx: RequestContext,
    gen: GenerationRequest,
    include_usage: bool,
    make_delta: Callable[[str, str | None, str | None, bool], Struct],
    make_usage: Callable[[str, p.Usage], Struct],
) -> Stream:
    routed = await service.open(ctx, gen)
    opened = routed.opened
    name = opened.deployment.name
    body = sse(
        chain(opened.first, opened.rest),
        routed.outcome,
        make_delta=lambda text, finish, first: make_delta(name, text, finish, first),
        make_usage=lambda usage: make_usage(name, usage),
        include_usage=include_usage,
        finalize=lambda done: service.finalize(ctx, opened, done),
    )
    return Stream(body, media_type=_SSE, headers={**_headers(routed), **_STREAM_HEADERS})


class OpenAIController(Controller):
    path = "/v1"
    tags = ["OpenAI"]

    @post(
        "/chat/completions",
        status_code=200,
        responses=_ERRORS,
        summary="Create a chat completion (JSON, or SSE when `stream` is true)",
    )
    async def chat_completions(
        self, request: Request[Any, Any, Any], data: JSONBody[p.ChatCompletionRequest]
    ) -> Response[p.ChatCompletion] | Stream:
        service = _service(request)
        request_id = _request_id(request)
        gen = from_chat(data, request_id)
        ctx = service.context(
            request_id,
            data.model,
            "chat",
            bool(data.stream),
            freshness=data.freshness,
            max_ttft_ms=data.max_ttft_ms,
            headers=request.headers,
            api_key=request_key(request),
        )
        created = int(ctx.arrived)
        completion_id = f"chatcmpl-{request_id[4:]}"
        if data.stream:

            def delta(model: str, text: str | None, finish: str | None, first: bool) -> Struct:
                return p.ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=model,
                    choices=[
                        p.ChunkChoice(
                            delta=p.ChoiceDelta(
                                role="assistant" if first else None,
                                content=text if text or not first else "",
                            ),
                            finish_reason=finish,
                        )
                    ],
                )

            def usage(model: str, u: p.Usage) -> Struct:
                return p.ChatCompletionChunk(
                    id=completion_id, created=created, model=model, choices=[], usage=u
                )

            include = bool(data.stream_options and data.stream_options.include_usage)
            return await _stream_response(service, ctx, gen, include, delta, usage)

        routed, wire_usage = await service.complete(ctx, gen)
        opened, outcome = routed.opened, routed.outcome
        body = p.ChatCompletion(
            id=completion_id,
            created=created,
            model=opened.deployment.name,
            choices=[
                p.ChatChoice(
                    index=0,
                    finish_reason=outcome.finish_reason,
                    message=p.AssistantMessage(content=outcome.text),
                )
            ],
            usage=wire_usage,
        )
        headers = _headers(routed)
        cost_headers(headers, wire_usage)
        return Response(body, headers=headers)

    @post(
        "/completions",
        status_code=200,
        responses=_ERRORS,
        summary="Create a (legacy) text completion (JSON, or SSE when `stream` is true)",
    )
    async def completions(
        self, request: Request[Any, Any, Any], data: JSONBody[p.CompletionRequest]
    ) -> Response[p.Completion] | Stream:
        service = _service(request)
        request_id = _request_id(request)
        gen = from_completion(data, request_id)
        ctx = service.context(
            request_id,
            data.model,
            "text_completion",
            bool(data.stream),
            freshness=data.freshness,
            max_ttft_ms=data.max_ttft_ms,
            headers=request.headers,
            api_key=request_key(request),
        )
        created = int(ctx.arrived)
        completion_id = f"cmpl-{request_id[4:]}"
        if data.stream:

            def delta(model: str, text: str | None, finish: str | None, first: bool) -> Struct:
                return p.Completion(
                    id=completion_id,
                    created=created,
                    model=model,
                    choices=[p.CompletionChoice(index=0, text=text or "", finish_reason=finish)],
                )

            def usage(model: str, u: p.Usage) -> Struct:
                return p.Completion(
                    id=completion_id, created=created, model=model, choices=[], usage=u
                )

            include = bool(data.stream_options and data.stream_options.include_usage)
            return await _stream_response(service, ctx, gen, include, delta, usage)

        routed, wire_usage = await service.complete(ctx, gen)
        opened, outcome = routed.opened, routed.outcome
        body = p.Completion(
            id=completion_id,
            created=created,
            model=opened.deployment.name,
            choices=[
                p.CompletionChoice(index=0, text=outcome.text, finish_reason=outcome.finish_reason)
            ],
            usage=wire_usage,
        )
        headers = _headers(routed)
        cost_headers(headers, wire_usage)
        return Response(body, headers=headers)

    @get("/models", summary="List models and groups, with knowledge cutoffs")
    async def models(self, request: Request[Any, Any, Any]) -> p.ModelList:
        runtime: Runtime = request.app.state.runtime
        created = int(runtime.started_at)
        return p.ModelList(
            data=[
                p.Model(
                    id=entry.name,
                    created=created,
                    owned_by="freshet",
                    knowledge_cutoff=entry.knowledge_cutoff,
                    backends=sorted({d.backend_id for d in entry.deployments}),
                    kind=entry.kind,  # type: ignore[arg-type]
                )
                for entry in runtime.fleet.catalog.entries()
            ]
        )
