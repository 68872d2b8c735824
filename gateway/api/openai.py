"""``/v1``: the OpenAI-compatible API (chat completions, legacy completions, models)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream

from gateway import protocol as p
from gateway.api.completions import Reply, StreamReply, chat, completion
from gateway.api.guard import request_key
from gateway.api.runtime import Runtime
from gateway.flow.service import Service

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


def _service(request: Request[Any, Any, Any]) -> Service:
    runtime: Runtime = request.app.state.runtime
    return runtime.service


def _request_id(request: Request[Any, Any, Any]) -> str:
    request_id: str = request.scope["state"]["request_id"]
    return request_id


def _response(reply: Reply) -> Response[Any] | Stream:
    if isinstance(reply, StreamReply):
        return Stream(reply.body, media_type=_SSE, headers=reply.headers)
    return Response(reply.body, headers=reply.headers)


class OpenAIController(Controller):
    """The OpenAI API on Litestar. The two ``POST`` endpoints are normally answered by the
    fast path in front of Litestar (:mod:`gateway.api.fastpath`); these handlers serve them
    when it is off (``server.fast_path: false``) and describe them in the OpenAPI schema."""

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
        reply = await chat(
            _service(request), data, _request_id(request), request.headers, request_key(request)
        )
        return _response(reply)

    @post(
        "/completions",
        status_code=200,
        responses=_ERRORS,
        summary="Create a (legacy) text completion (JSON, or SSE when `stream` is true)",
    )
    async def completions(
        self, request: Request[Any, Any, Any], data: JSONBody[p.CompletionRequest]
    ) -> Response[p.Completion] | Stream:
        reply = await completion(
            _service(request), data, _request_id(request), request.headers, request_key(request)
        )
        return _response(reply)

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
