"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's request as a
:class:`GenerationRequest`, served by the same :class:`Service` as chat (routing with
freshness, admission, limits and budgets, metering, the one usage record, whose
``operation`` is ``messages``), answered as Anthropic's ``Message`` or event stream.

Served: ``system``, ``messages`` whose content is a string or ``text``, ``tool_use`` and
``tool_result`` blocks, ``max_tokens`` (required, as Anthropic requires it),
``stop_sequences``, ``temperature``, ``top_p``, ``stream``, client ``tools`` and
``tool_choice`` (:mod:`.tools`). Not yet: images, server tools (a 400 names each),
``top_k`` (ignored, as samplers differ). ``stop_reason`` is ``end_turn``, ``max_tokens``,
``tool_use`` or ``stop_sequence`` (with the ``stop_sequence`` that matched, where the
backend says which: see :attr:`gateway.backend.Chunk.stop_sequence`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.api.anthropic import protocol as a
from gateway.api.anthropic import tools
from gateway.api.anthropic.events import events, stop_reason, wire_usage
from gateway.api.completions import (
    STREAM_HEADERS,
    EdgeRequest,
    JsonReply,
    Reply,
    StreamReply,
    route_headers,
)
from gateway.backend import GenerationRequest, Message, TokenCounter
from gateway.errors import InvalidRequest
from gateway.flow.estimate import estimate_prompt_tokens
from gateway.flow.fleet import Fleet
from gateway.flow.service import Service, cost_headers

OPERATION = "messages"
COUNT_OPERATION = "count_tokens"
HEADER_COUNT = "x-freshet-token-count"  # exact (the backend's tokenizer) or estimate


def _text(content: a.Content, param: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for j, block in enumerate(content):
        if block.type != "text":
            raise InvalidRequest(
                f"content block type {block.type!r} is not supported here; only 'text'",
                param=f"{param}[{j}].type",
            )
        parts.append(block.text or "")
    return "".join(parts)


def to_generation(
    data: a.MessageCreateParams | a.CountTokensParams, request_id: str
) -> GenerationRequest:
    """The request as backends see it: a chat whose first message is the ``system``."""
    specs = tools.tools(data.tools)
    choice, parallel = tools.tool_choice(data.tool_choice, specs)
    messages = []
    if data.system is not None:
        system = _text(data.system, "system")
        if system:
            messages.append(Message(role="system", content=system))
    for i, msg in enumerate(data.messages):
        messages.extend(tools.message(msg, i))
    if isinstance(data, a.CountTokensParams):
        return GenerationRequest(
            request_id=request_id,
            operation="chat",
            model=data.model,
            messages=messages,
            tools=specs,
            tool_choice=choice,
            parallel_tool_calls=parallel,
        )
    return GenerationRequest(
        request_id=request_id,
        operation="chat",
        model=data.model,
        messages=messages,
        max_tokens=data.max_tokens,
        temperature=data.temperature,
        top_p=data.top_p,
        stop=tuple(s for s in data.stop_sequences or () if s),
        tools=specs,
        tool_choice=choice,
        parallel_tool_calls=parallel,
    )


async def messages(service: Service, data: a.MessageCreateParams, edge: EdgeRequest) -> Reply:
    request_id = edge.request_id
    gen = to_generation(data, request_id)
    options = edge.options
    ctx = service.context(
        request_id,
        data.model,
        OPERATION,
        bool(data.stream),
        freshness=data.freshness,
        header_freshness=options.freshness,
        max_ttft_ms=data.max_ttft_ms if data.max_ttft_ms is not None else options.max_ttft_ms,
        api_key=edge.api_key,
        observer=edge.observer,
    )
    message_id = f"msg_{request_id[4:]}"
    if data.stream:
        routed = await service.open(ctx, gen)
        opened = routed.opened
        prompt = opened.first.prompt_tokens or routed.outcome.prompt_tokens_estimate or 0
        start = a.Message(
            id=message_id,
            content=[],
            model=opened.deployment.name,
            usage=a.Usage(input_tokens=prompt, output_tokens=0),
        )
        body = events(
            opened.rest,
            routed.outcome,
            start,
            finalize=lambda done: service.finalize(ctx, opened, done),
            first=opened.first,
        )
        return StreamReply(body, {**route_headers(routed), **STREAM_HEADERS})
    routed, usage = await service.complete(ctx, gen)
    headers = route_headers(routed)
    cost_headers(headers, usage)
    outcome = routed.outcome
    reply = a.Message(
        id=message_id,
        content=tools.blocks(outcome.text, outcome.tool_calls()),
        model=routed.opened.deployment.name,
        stop_reason=stop_reason(outcome.finish_reason, outcome.stop_sequence),
        stop_sequence=outcome.stop_sequence,
        usage=wire_usage(usage),
    )
    return JsonReply(reply, headers)


CountHandler = Callable[[Service, a.CountTokensParams, EdgeRequest], Awaitable[Reply]]


def count_tokens(fleet: Fleet) -> CountHandler:
    """The handler of ``/v1/messages/count_tokens``: routed as a request would be, counted
    by the chosen backend's tokenizer when it has one (:class:`TokenCounter`), else
    estimated; nothing is generated, admitted or recorded (it costs nothing)."""

    async def count(service: Service, data: a.CountTokensParams, edge: EdgeRequest) -> Reply:
        gen = to_generation(data, edge.request_id)
        ctx = service.context(
            edge.request_id,
            data.model,
            COUNT_OPERATION,
            False,
            freshness=data.freshness,
            header_freshness=edge.options.freshness,
            api_key=edge.api_key,
            observer=edge.observer,
        )
        decision = await service.decide(ctx, gen)
        dep = decision.ordered[0].deployment
        backend = fleet.get(dep.backend_id)
        headers = {"x-freshet-backend": dep.backend_id}
        if isinstance(backend, TokenCounter):
            tokens = await backend.count_tokens(gen)
            headers[HEADER_COUNT] = "exact"
        else:
            tokens = estimate_prompt_tokens(gen)
            headers[HEADER_COUNT] = "estimate"
        return JsonReply(a.CountTokens(input_tokens=tokens), headers)

    return count
