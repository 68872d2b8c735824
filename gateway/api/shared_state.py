"""``GET /freshet/state``: which store holds shared state, and whether it is reachable."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get

from gateway.api.runtime import Runtime
from gateway.state.shared import StateView


class StateController(Controller):
    tags = ["Freshet"]

    @get(
        "/freshet/state",
        summary="Shared state: local or Redis, auth, keys, Redis outages, spooled records",
    )
    async def state(self, request: Request[Any, Any, Any]) -> StateView:
        runtime: Runtime = request.app.state.runtime
        return runtime.shared.view()
