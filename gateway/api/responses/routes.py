"""``GET`` and ``DELETE /v1/responses/{id}`` on Litestar, behind the edge (auth by the
client's key, as every ``/v1`` path): a stored response as the key that made it may see
it, else a 404 in OpenAI's shape. ``POST /v1/responses`` is the edge's
(:mod:`gateway.api.generation`; described in :mod:`gateway.api.openai`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from gateway import protocol as p
from gateway.api.edge import STATE_KEY
from gateway.api.responses import protocol as r
from gateway.api.responses.store import find
from gateway.api.runtime import Runtime
from gateway.state.keys import ApiKey

_ERRORS = {
    404: ResponseSpec(
        data_container=p.ErrorResponse,
        description="No stored response with this id for this key (expired, `store: false`)",
    ),
    503: ResponseSpec(data_container=p.ErrorResponse, description="The store is unavailable"),
}


def _key(request: Request[Any, Any, Any]) -> str | None:
    key: ApiKey | None = request.scope.get("state", {}).get(STATE_KEY)
    return key.name if key is not None else None


class ResponsesController(Controller):
    path = "/v1/responses"
    tags = ["OpenAI"]

    @get("/{response_id:str}", responses=_ERRORS, summary="A stored response")
    async def retrieve(
        self, request: Request[Any, Any, Any], response_id: FromPath[str]
    ) -> r.Response:
        runtime: Runtime = request.app.state.runtime
        stored = await find(runtime.responses, response_id, _key(request), "response_id")
        return stored.response

    @delete(
        "/{response_id:str}", status_code=200, responses=_ERRORS, summary="Delete a stored response"
    )
    async def remove(
        self, request: Request[Any, Any, Any], response_id: FromPath[str]
    ) -> r.DeletedResponse:
        runtime: Runtime = request.app.state.runtime
        await find(runtime.responses, response_id, _key(request), "response_id")
        await runtime.responses.delete(response_id)
        return r.DeletedResponse(id=response_id)
