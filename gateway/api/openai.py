"""``/v1``: the OpenAI-compatible API (chat completions, legacy completions, models)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream

from gateway import protocol as p
from gateway.api.embeddings import protocol as emb
from gateway.api.responses import protocol as r
from gateway.api.runtime import Runtime
from gateway.backend import Deployment
from gateway.errors import FreshetError

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


def _served_by_the_edge() -> FreshetError:
    # Gateway.__call__ hands both generation endpoints to gateway.api.generation before
    # Litestar routes anything; reaching this means the app was mounted without it.
    return FreshetError("generation endpoints are served by the gateway's edge")


class OpenAIController(Controller):
    """The OpenAI API on Litestar: ``GET /v1/models``. The two ``POST`` endpoints are
    answered by the edge in front of Litestar (:mod:`gateway.api.generation`); their
    handlers here describe them in the OpenAPI document and are never called."""

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
        raise _served_by_the_edge()  # pragma: no cover

    @post(
        "/completions",
        status_code=200,
        responses=_ERRORS,
        summary="Create a (legacy) text completion (JSON, or SSE when `stream` is true)",
    )
    async def completions(
        self, request: Request[Any, Any, Any], data: JSONBody[p.CompletionRequest]
    ) -> Response[p.Completion] | Stream:
        raise _served_by_the_edge()  # pragma: no cover

    @post(
        "/responses",
        status_code=200,
        responses=_ERRORS,
        summary="Create a response (Responses API; JSON, or its events when `stream` is true)",
    )
    async def responses(
        self, request: Request[Any, Any, Any], data: JSONBody[r.ResponseCreateParams]
    ) -> Response[r.Response] | Stream:
        raise _served_by_the_edge()  # pragma: no cover

    @post(
        "/embeddings",
        status_code=200,
        responses=_ERRORS,
        summary="Create embeddings (floats, or base64 little-endian float32)",
    )
    async def embeddings(
        self, request: Request[Any, Any, Any], data: JSONBody[emb.EmbeddingCreateParams]
    ) -> emb.CreateEmbeddingResponse:
        raise _served_by_the_edge()  # pragma: no cover

    @get("/models", summary="List models and groups, with knowledge cutoffs")
    async def models(self, request: Request[Any, Any, Any]) -> p.ModelList:
        runtime: Runtime = request.app.state.runtime
        created = int(runtime.started_at)
        models = []
        for entry in runtime.fleet.catalog.entries():
            default, ceiling = _output_caps(entry.deployments)
            models.append(
                p.Model(
                    id=entry.name,
                    created=created,
                    owned_by="freshet",
                    knowledge_cutoff=entry.knowledge_cutoff,
                    backends=sorted({d.backend_id for d in entry.deployments}),
                    kind=entry.kind,  # type: ignore[arg-type]
                    default_output_tokens=default,
                    max_output_tokens=ceiling,
                    capabilities=sorted({c for d in entry.deployments for c in d.capabilities}),
                )
            )
        return p.ModelList(data=models)


def _output_caps(deployments: Sequence[Deployment]) -> tuple[int | None, int | None]:
    """What ``/v1/models`` says of output: the default without ``max_tokens`` (None: until
    the context is full) and the ceiling; for a group, the largest of its deployments'."""
    defaults = [d.output_limit(None) for d in deployments]
    ceilings = [min(d.max_output_tokens or d.max_context, d.max_context) for d in deployments]
    known = [x for x in defaults if x is not None]
    default = max(known) if known and len(known) == len(defaults) else None
    return default, max(ceilings, default=None)
