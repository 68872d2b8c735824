"""``POST /v1/responses``: OpenAI's Responses API request as a :class:`GenerationRequest`,
served by the same :class:`Service` as chat (routing with freshness, admission, limits and
budgets, metering, the one usage record, whose ``operation`` is ``responses``), answered as
a ``Response`` or its event stream, and stored unless ``store: false``.

Served: ``input`` (a string, or message items whose content is text),
``instructions``, ``max_output_tokens``, ``temperature``, ``top_p``, ``stream``,
``previous_response_id`` (the stored conversation comes first; an unknown id, or one made
with ``store: false`` or by another key, is a 404 naming the parameter), ``store``,
``metadata`` (echoed), function ``tools`` with ``tool_choice`` and ``parallel_tool_calls``
(``function_call`` output items; ``function_call`` and ``function_call_output`` input
items carry a call and its result back), ``text.format`` (structured output: ``json_object``
or ``json_schema``). Freshet's ``freshness`` and ``max_ttft_ms`` extensions as on chat.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from gateway.api.completions import (
    STREAM_HEADERS,
    EdgeRequest,
    JsonReply,
    Reply,
    StreamReply,
    route_headers,
)
from gateway.api.responses import build
from gateway.api.responses import protocol as r
from gateway.api.responses.events import events
from gateway.api.responses.store import ResponseStore, Stored, find
from gateway.api.responses.translate import input_items, output_items, to_generation
from gateway.errors import FreshetError
from gateway.flow.service import Service, cost_headers

log = logging.getLogger(__name__)

OPERATION = "responses"

Handler = Callable[[Service, r.ResponseCreateParams, EdgeRequest], Awaitable[Reply]]


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def create(store: ResponseStore) -> Handler:
    """The handler of ``POST /v1/responses``, keeping responses in ``store``."""

    async def handle(service: Service, data: r.ResponseCreateParams, edge: EdgeRequest) -> Reply:
        key = edge.api_key.name if edge.api_key is not None else None
        items = input_items(data.input)
        own_from = 0
        if data.previous_response_id is not None:
            earlier = await find(store, data.previous_response_id, key, "previous_response_id")
            before = [*earlier.input, *output_items(earlier.response)]
            own_from = len(before)
            items = [*before, *items]
        gen = to_generation(data, items, edge.request_id)
        options = edge.options
        ctx = service.context(
            edge.request_id,
            data.model,
            OPERATION,
            bool(data.stream),
            freshness=data.freshness,
            header_freshness=options.freshness,
            max_ttft_ms=data.max_ttft_ms if data.max_ttft_ms is not None else options.max_ttft_ms,
            api_key=edge.api_key,
            observer=edge.observer,
        )
        rid = response_id(edge.request_id)
        keep = data.store is not False

        async def save(final: r.Response) -> None:
            if not keep:
                return
            try:
                await store.put(Stored(key=key, input=items, response=final, own_from=own_from))
            except FreshetError as exc:  # the client has its answer either way
                log.warning("response %s not stored: %s", final.id, exc.message)

        if data.stream:
            routed = await service.open(ctx, gen)
            opened = routed.opened
            base = build.start(rid, ctx.arrived, opened.deployment.name, data)
            body = events(
                opened.rest,
                routed.outcome,
                base,
                finalize=lambda done: service.finalize(ctx, opened, done),
                save=save,
                first=opened.first,
            )
            return StreamReply(body, {**route_headers(routed), **STREAM_HEADERS})
        routed, usage = await service.complete(ctx, gen)
        headers = route_headers(routed)
        cost_headers(headers, usage)
        base = build.start(rid, ctx.arrived, routed.opened.deployment.name, data)
        outcome = routed.outcome
        final = build.finish(base, outcome, usage, build.output(rid, outcome))
        await save(final)
        return JsonReply(final, headers)

    return handle
