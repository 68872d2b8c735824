"""``GET`` and ``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items`` on
Litestar, behind the edge (auth by the client's key, as every ``/v1`` path): a stored
response as the key that made it may see it, else a 404 in OpenAI's shape.
``POST /v1/responses`` is the edge's (:mod:`gateway.api.generation`; described in
:mod:`gateway.api.openai`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, delete, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter

from gateway import protocol as p
from gateway.api.edge import STATE_KEY
from gateway.api.responses import protocol as r
from gateway.api.responses.store import find
from gateway.api.responses.translate import listed
from gateway.api.runtime import Runtime
from gateway.errors import InvalidRequest
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

    @get(
        "/{response_id:str}/input_items",
        responses=_ERRORS,
        summary="The input items of a stored response (its own, not the earlier turns')",
    )
    async def input_items(
        self,
        request: Request[Any, Any, Any],
        response_id: FromPath[str],
        after: Annotated[str | None, QueryParameter(max_length=256)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        order: FromQuery[Literal["asc", "desc"]] = "desc",
    ) -> r.InputItemList:
        runtime: Runtime = request.app.state.runtime
        stored = await find(runtime.responses, response_id, _key(request), "response_id")
        items = listed(response_id, stored.input[stored.own_from :])
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.id for item in items]
            if after not in ids:
                raise InvalidRequest(f"no input item {after!r} in this response", param="after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return r.InputItemList(
            data=page,
            first_id=page[0].id if page else "",
            last_id=page[-1].id if page else "",
            has_more=len(items) > limit,
        )

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
