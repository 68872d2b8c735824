"""Freshet's own API: liveness, readiness, backends, plugins and each key's usage."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from msgspec import Struct

from gateway.api.keys_usage import KeysUsage, keys_usage
from gateway.api.runtime import Runtime
from gateway.plugins import PluginInfo
from gateway.state.health import HealthView
from gateway.state.quotes import FitView

log = logging.getLogger(__name__)


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


class UpstreamView(Struct, kw_only=True):
    """One server behind a backend (types that have several, e.g. ``openai-compatible``)."""

    url: str
    state: str  # up | probing | ejected
    ejected_until: float | None = None  # Unix time
    ejections: int = 0
    consecutive_failures: int = 0
    requests: int = 0  # in the health window
    failures: int = 0
    stream_failures: int = 0  # after the first byte: not counted for ejection
    in_flight: int = 0
    last_error: str | None = None


class BackendView(Struct, kw_only=True):
    id: str
    type: str
    kind: str
    # Takes requests now: loaded, the backend says it is well, and its circuit is not open.
    healthy: bool
    running: int
    waiting: int
    detail: str | None
    deployments: list[DeploymentView]
    circuit: HealthView  # the same state /metrics shows (freshet_backend_circuit_state)
    upstreams: list[UpstreamView] | None = None
    # The work it has committed (BackendStatus.busy_s: seconds until a request admitted now
    # could start; None: it does not say), the adapters it has loaded, and how true the
    # router's quotes for it were, with the correction learned from them (this process).
    busy_s: float | None = None
    adapters_loaded: list[str] | None = None
    quotes: FitView | None = None


def upstreams(backend: object) -> list[UpstreamView] | None:
    """A backend's servers, when its type says (an ``upstream_health()`` method)."""
    method = getattr(backend, "upstream_health", None)
    if not callable(method):
        return None
    try:
        return msgspec.convert(method(), list[UpstreamView], strict=False)
    except msgspec.ValidationError as exc:
        log.warning("%r.upstream_health() is not a list of servers: %s", backend, exc)
        return None


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
            circuit = runtime.health.view(backend_id)
            out.append(
                BackendView(
                    id=backend_id,
                    type=runtime.fleet.config(backend_id).type,
                    kind=backend.kind,
                    healthy=status.healthy and runtime.ready.is_set() and circuit.state != "open",
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
                    circuit=circuit,
                    upstreams=upstreams(backend),
                    busy_s=status.busy_s,
                    adapters_loaded=(
                        list(status.adapters_loaded) if status.adapters_loaded is not None else None
                    ),
                    quotes=runtime.accounting.calibration.view(backend_id),
                )
            )
        return out

    @get("/freshet/plugins", summary="Loaded plugins, their distributions and hooks")
    async def plugins(self, request: Request[Any, Any, Any]) -> list[PluginInfo]:
        return _runtime(request).plugins.info()

    @get(
        "/freshet/keys/usage",
        summary="Each API key's spend today and rate window, beside its budgets and limits",
    )
    async def usage_by_key(self, request: Request[Any, Any, Any]) -> KeysUsage:
        """From the ledger (requests that reached a backend); never a key's secret."""
        return await keys_usage(_runtime(request))
