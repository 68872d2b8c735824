"""The two generation endpoints, independent of the HTTP framework.

``POST /v1/chat/completions`` and ``POST /v1/completions`` are served by the raw ASGI
edge (:mod:`gateway.api.generation`), which calls :func:`chat` and :func:`completion`
here with the decoded body and what the edge knows (:class:`EdgeRequest`); they turn them
into a :class:`JsonReply` or a :class:`StreamReply`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import NamedTuple

from msgspec import Struct

from gateway import protocol as p
from gateway.api.edge import RequestOptions
from gateway.backend import GenerationRequest, ToolCallDelta
from gateway.flow.context import RequestContext
from gateway.flow.observer import RequestObserver
from gateway.flow.requests import from_chat, from_completion
from gateway.flow.service import Routed, Service, cost_headers
from gateway.flow.streaming import sse
from gateway.state.keys import ApiKey

STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class JsonReply(NamedTuple):
    body: Struct
    headers: dict[str, str]


class StreamReply(NamedTuple):
    """Server-sent events; ``body`` must be iterated to the end or closed."""

    body: AsyncIterator[bytes]
    headers: dict[str, str]


Reply = JsonReply | StreamReply


class EdgeRequest(NamedTuple):
    """What the edge knows of a request when its body is decoded."""

    request_id: str
    api_key: ApiKey | None
    options: RequestOptions
    observer: RequestObserver


DeltaMaker = Callable[[str, str | None, str | None, bool], Struct]
UsageMaker = Callable[[str, p.Usage], Struct]
ToolDeltaMaker = Callable[[str, Sequence[ToolCallDelta], bool], Struct]


def route_headers(routed: Routed) -> dict[str, str]:
    dep = routed.opened.deployment
    headers = {
        "x-freshet-backend": dep.backend_id,
        "x-freshet-route": routed.route_header(),
    }
    if dep.knowledge_cutoff:
        headers["x-freshet-knowledge-cutoff"] = dep.knowledge_cutoff.isoformat()
    return headers


async def _stream(
    service: Service,
    ctx: RequestContext,
    gen: GenerationRequest,
    include_usage: bool,
    make_delta: DeltaMaker,
    make_usage: UsageMaker,
    make_tool_delta: ToolDeltaMaker | None = None,
) -> StreamReply:
    routed = await service.open(ctx, gen)
    opened = routed.opened
    name = opened.deployment.name
    body = sse(
        opened.rest,
        routed.outcome,
        make_delta=lambda text, finish, first: make_delta(name, text, finish, first),
        make_usage=lambda usage: make_usage(name, usage),
        include_usage=include_usage,
        finalize=lambda done: service.finalize(ctx, opened, done),
        make_tool_delta=(
            None
            if make_tool_delta is None
            else lambda calls, first: make_tool_delta(name, calls, first)
        ),
        first_chunk=opened.first,
    )
    return StreamReply(body, {**route_headers(routed), **STREAM_HEADERS})


def _context(
    service: Service,
    data: p.ChatCompletionRequest | p.CompletionRequest,
    operation: str,
    edge: EdgeRequest,
) -> RequestContext:
    options = edge.options
    return service.context(
        edge.request_id,
        data.model,
        operation,
        bool(data.stream),
        freshness=data.freshness,
        header_freshness=options.freshness,
        max_ttft_ms=data.max_ttft_ms if data.max_ttft_ms is not None else options.max_ttft_ms,
        api_key=edge.api_key,
        observer=edge.observer,
    )


def _include_usage(data: p.ChatCompletionRequest | p.CompletionRequest) -> bool:
    return bool(data.stream_options and data.stream_options.include_usage)


BodyMaker = Callable[[Routed, p.Usage], Struct]


async def _reply(
    service: Service,
    ctx: RequestContext,
    gen: GenerationRequest,
    data: p.ChatCompletionRequest | p.CompletionRequest,
    make_delta: DeltaMaker,
    make_usage: UsageMaker,
    make_body: BodyMaker,
    make_tool_delta: ToolDeltaMaker | None = None,
) -> Reply:
    if data.stream:
        return await _stream(
            service, ctx, gen, _include_usage(data), make_delta, make_usage, make_tool_delta
        )
    routed, wire_usage = await service.complete(ctx, gen)
    reply_headers = route_headers(routed)
    cost_headers(reply_headers, wire_usage)
    return JsonReply(make_body(routed, wire_usage), reply_headers)


async def chat(
    service: Service,
    data: p.ChatCompletionRequest,
    edge: EdgeRequest,
) -> Reply:
    request_id = edge.request_id
    gen = from_chat(data, request_id)
    ctx = _context(service, data, "chat", edge)
    created = int(ctx.arrived)
    completion_id = f"chatcmpl-{request_id[4:]}"

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

    def tool_delta(model: str, calls: Sequence[ToolCallDelta], first: bool) -> Struct:
        return p.ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model,
            choices=[
                p.ChunkChoice(
                    delta=p.ChoiceDelta(
                        role="assistant" if first else None,
                        tool_calls=[_wire_tool_delta(c) for c in calls],
                    ),
                    finish_reason=None,
                )
            ],
        )

    def usage(model: str, u: p.Usage) -> Struct:
        return p.ChatCompletionChunk(
            id=completion_id, created=created, model=model, choices=[], usage=u
        )

    def body(routed: Routed, u: p.Usage) -> Struct:
        outcome = routed.outcome
        calls = outcome.tool_calls()
        text = outcome.text
        return p.ChatCompletion(
            id=completion_id,
            created=created,
            model=routed.opened.deployment.name,
            choices=[
                p.ChatChoice(
                    index=0,
                    finish_reason=outcome.finish_reason,
                    message=p.AssistantMessage(
                        content=text if text or not calls else None,
                        tool_calls=[
                            p.ToolCall(
                                id=c.id, function=p.FunctionCall(name=c.name, arguments=c.arguments)
                            )
                            for c in calls
                        ]
                        or None,
                    ),
                )
            ],
            usage=u,
        )

    return await _reply(service, ctx, gen, data, delta, usage, body, tool_delta)


def _wire_tool_delta(call: ToolCallDelta) -> p.ToolCallDelta:
    """A backend's piece of a tool call in OpenAI's chunk shape: the first piece of a call
    (the one with its id) also carries ``type`` and the function's name."""
    return p.ToolCallDelta(
        index=call.index,
        id=call.id,
        type="function" if call.id is not None else None,
        function=p.FunctionCallDelta(name=call.name, arguments=call.arguments),
    )


async def completion(
    service: Service,
    data: p.CompletionRequest,
    edge: EdgeRequest,
) -> Reply:
    request_id = edge.request_id
    gen = from_completion(data, request_id)
    ctx = _context(service, data, "text_completion", edge)
    created = int(ctx.arrived)
    completion_id = f"cmpl-{request_id[4:]}"

    def delta(model: str, text: str | None, finish: str | None, first: bool) -> Struct:
        return p.Completion(
            id=completion_id,
            created=created,
            model=model,
            choices=[p.CompletionChoice(index=0, text=text or "", finish_reason=finish)],
        )

    def usage(model: str, u: p.Usage) -> Struct:
        return p.Completion(id=completion_id, created=created, model=model, choices=[], usage=u)

    def body(routed: Routed, u: p.Usage) -> Struct:
        outcome = routed.outcome
        return p.Completion(
            id=completion_id,
            created=created,
            model=routed.opened.deployment.name,
            choices=[
                p.CompletionChoice(index=0, text=outcome.text, finish_reason=outcome.finish_reason)
            ],
            usage=u,
        )

    return await _reply(service, ctx, gen, data, delta, usage, body)
