"""Freshet's own API: liveness, readiness, backends and plugins."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Controller, Request, Response, get
from msgspec import Struct

from gateway.api.runtime import Runtime
from gateway.plugins import PluginInfo


class Health(Struct, kw_only=True):
    status: str


class Ready(Struct, kw_only=True):
    ready: bool
    backends: list[str]
    error: str | None = None


class DeploymentView(Struct, kw_only=True):
    name: str
    model: str
    adapter: str | None
    knowledge_cutoff: dt.date | None
    max_context: int


class BackendView(Struct, kw_only=True):
    id: str
    type: str
    kind: str
    healthy: bool
    running: int
    waiting: int
    detail: str | None
    deployments: list[DeploymentView]


def _runtime(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


class AdminController(Controller):
    tags = ["Freshet"]

    @get("/health", summary="The process is alive")
    async def health(self) -> Health:
        return Health(status="ok")

    @get("/ready", summary="Every backend is loaded (503 until then)")
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Ready]:
        runtime = _runtime(request)
        body = Ready(
            ready=runtime.ready.is_set(),
            backends=list(runtime.fleet.backends),
            error=repr(runtime.start_error) if runtime.start_error else None,
        )
        return Response(body, status_code=200 if body.ready else 503)

    @get("/freshet/backends", summary="Configured backends, their deployments and health")
    async def backends(self, request: Request[Any, Any, Any]) -> list[BackendView]:
        runtime = _runtime(request)
        out = []
        for backend_id, backend in runtime.fleet.backends.items():
            status = await backend.status()
            out.append(
                BackendView(
                    id=backend_id,
                    type=runtime.fleet.config(backend_id).type,
                    kind=backend.kind,
                    healthy=status.healthy and runtime.ready.is_set(),
                    running=status.running,
                    waiting=status.waiting,
                    detail=status.detail,
                    deployments=[
                        DeploymentView(
                            name=d.name,
                            model=d.model,
                            adapter=d.adapter,
                            knowledge_cutoff=d.knowledge_cutoff,
                            max_context=d.max_context,
                        )
                        for d in backend.deployments
                    ],
                )
            )
        return out

    @get("/freshet/plugins", summary="Loaded plugins, their distributions and hooks")
    async def plugins(self, request: Request[Any, Any, Any]) -> list[PluginInfo]:
        return _runtime(request).plugins.info()
