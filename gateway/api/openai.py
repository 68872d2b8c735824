"""``/v1``: the OpenAI-compatible API (chat completions, legacy completions, models)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream
from msgspec import Struct

from gateway import protocol as p
from gateway.backend import GenerationRequest
from gateway.dispatch import Opened, chain, open_stream
from gateway.errors import BackendError, BackendUnavailable, FreshetError
from gateway.requests import from_chat, from_completion
from gateway.runtime import Runtime
from gateway.streaming import Outcome, collect, sse, to_usage

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


def _runtime(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _request_id(request: Request[Any, Any, Any]) -> str:
    request_id: str = request.scope["state"]["request_id"]
    return request_id


def _headers(opened: Opened) -> dict[str, str]:
    dep = opened.deployment
    headers = {
        "x-freshet-backend": dep.backend_id,
        "x-freshet-route": f"chosen={dep.backend_id}; failed_over={len(opened.attempts)}",
    }
    if dep.knowledge_cutoff:
        headers["x-freshet-knowledge-cutoff"] = dep.knowledge_cutoff.isoformat()
    return headers


def _energy_headers(headers: dict[str, str], outcome: Outcome) -> None:
    if outcome.usage and outcome.usage.energy_joules is not None:
        headers["x-freshet-energy-joules"] = f"{outcome.usage.energy_joules:.6g}"


async def _open(runtime: Runtime, gen: GenerationRequest, model: str, skip: int = 0) -> Opened:
    if not runtime.ready.is_set():
        raise BackendUnavailable("backends are still loading; retry shortly")
    candidates = runtime.fleet.catalog.resolve(model).deployments[skip:]
    return await open_stream(runtime.fleet, candidates, gen)


async def _complete(runtime: Runtime, gen: GenerationRequest, model: str) -> tuple[Opened, Outcome]:
    """Non-streaming: nothing reaches the client until the end, so a failure anywhere
    before then may still fall back to the remaining candidates."""
    skip = 0
    while True:
        opened = await _open(runtime, gen, model, skip)
        try:
            return opened, await collect(chain(opened.first, opened.rest), Outcome())
        except FreshetError:
            remaining = runtime.fleet.catalog.resolve(model).deployments
            skip = remaining.index(opened.deployment) + 1
            if skip >= len(remaining):
                raise
        except Exception as exc:
            raise BackendError(f"backend {opened.deployment.backend_id} failed: {exc!r}") from exc


def _stream_response(
    opened: Opened,
    include_usage: bool,
    make_delta: Callable[[str | None, str | None, bool], Struct],
    make_usage: Callable[[p.Usage], Struct],
) -> Stream:
    body = sse(
        chain(opened.first, opened.rest),
        Outcome(),
        make_delta=make_delta,
        make_usage=make_usage,
        include_usage=include_usage,
    )
    return Stream(body, media_type=_SSE, headers={**_headers(opened), **_STREAM_HEADERS})


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
        runtime = _runtime(request)
        request_id = _request_id(request)
        gen = from_chat(data, request_id)
        created = int(time.time())
        completion_id = f"chatcmpl-{request_id[4:]}"
        if data.stream:
            opened = await _open(runtime, gen, data.model)
            name = opened.deployment.name

            def delta(text: str | None, finish: str | None, first: bool) -> Struct:
                return p.ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=name,
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

            def usage(u: p.Usage) -> Struct:
                return p.ChatCompletionChunk(
                    id=completion_id, created=created, model=name, choices=[], usage=u
                )

            include = bool(data.stream_options and data.stream_options.include_usage)
            return _stream_response(opened, include, delta, usage)

        opened, outcome = await _complete(runtime, gen, data.model)
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
            usage=to_usage(outcome.usage),
        )
        headers = _headers(opened)
        _energy_headers(headers, outcome)
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
        runtime = _runtime(request)
        request_id = _request_id(request)
        gen = from_completion(data, request_id)
        created = int(time.time())
        completion_id = f"cmpl-{request_id[4:]}"
        if data.stream:
            opened = await _open(runtime, gen, data.model)
            name = opened.deployment.name

            def delta(text: str | None, finish: str | None, first: bool) -> Struct:
                return p.Completion(
                    id=completion_id,
                    created=created,
                    model=name,
                    choices=[p.CompletionChoice(index=0, text=text or "", finish_reason=finish)],
                )

            def usage(u: p.Usage) -> Struct:
                return p.Completion(
                    id=completion_id, created=created, model=name, choices=[], usage=u
                )

            include = bool(data.stream_options and data.stream_options.include_usage)
            return _stream_response(opened, include, delta, usage)

        opened, outcome = await _complete(runtime, gen, data.model)
        body = p.Completion(
            id=completion_id,
            created=created,
            model=opened.deployment.name,
            choices=[
                p.CompletionChoice(index=0, text=outcome.text, finish_reason=outcome.finish_reason)
            ],
            usage=to_usage(outcome.usage),
        )
        headers = _headers(opened)
        _energy_headers(headers, outcome)
        return Response(body, headers=headers)

    @get("/models", summary="List models and groups, with knowledge cutoffs")
    async def models(self, request: Request[Any, Any, Any]) -> p.ModelList:
        runtime = _runtime(request)
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
