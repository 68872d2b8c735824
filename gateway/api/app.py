"""The app factory: ``create_app(settings) -> Litestar``. No module-level state."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from gateway.api import admin, cost_reports, openai, route, shared_state, traces
from gateway.api.browser import BrowserGuard
from gateway.api.drain import hook_signals
from gateway.api.edge import CheckedRequest, edge_middleware, front_door
from gateway.api.error_response import freshet_error, http_error, server_error
from gateway.api.generation import Generation
from gateway.api.responses.routes import ResponsesController
from gateway.api.runtime import Runtime
from gateway.api.schema_assets import SwaggerOffline
from gateway.api.ui import controller as ui
from gateway.errors import FreshetError
from gateway.plugins import core_version
from gateway.settings import Settings

log = logging.getLogger(__name__)


class Gateway(Litestar):
    """Litestar, with the generation endpoints answered by the edge in front of it, and
    every other HTTP request through the edge's front door first."""

    generation: Generation | None = None
    guard: BrowserGuard | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if self.generation is not None:
                endpoint = self.generation.endpoint(scope)
                if endpoint is not None:
                    await self.generation.serve(endpoint, scope, receive, send)
                    return
            if self.guard is not None:
                send = await front_door(self.guard, scope, send)
                if send is None:
                    return
        await super().__call__(scope, receive, send)


GC_THRESHOLD = 10_000  # allocations between young collections, once the heap is frozen


def freeze_heap_when_started(starting: asyncio.Task[None]) -> None:
    """Once the backends are loaded, move every object alive (modules, the app, models,
    tables: some 100,000 of them) out of the cyclic collector's reach (``gc.freeze``), so
    that its full collections, which requests in flight trigger under load, walk only
    what requests allocate. They walked everything, taking 150 ms and more each, a dozen
    times in 10 s at c=256: stalls that every request in flight waited out. Objects are
    still freed by reference counting; only cycles among them would now never be."""
    if starting.cancelled() or starting.exception() is not None:
        return
    gc.collect()
    gc.freeze()
    # Requests free what they allocate by reference counting; the collector is there for
    # the few cycles. At the default threshold (700 allocations) it ran some 230 times a
    # second at c=256, 8 % of the process's time; at 10,000, 20 times, 1 % (gc.callbacks,
    # this machine), and the rare cycle lives a few milliseconds longer.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    log.debug("%d objects set aside from the cyclic collector", gc.get_freeze_count())


def create_app(
    settings: Settings, runtime: Runtime | None = None, *, signals: bool = False
) -> Litestar:
    runtime = runtime or Runtime(settings)
    guard = BrowserGuard(settings.host, settings.allowed_hosts, settings.cors_origins)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Backends load in the background so /health answers at once and /ready flips
        # when the models are in memory.
        starting = asyncio.create_task(runtime.start(), name="freshet-start-backends")
        # Under a server: SIGTERM begins the drain before the server stops (gateway.api.drain),
        # and once the backends are loaded the heap so far is set aside from the collector.
        unhook = hook_signals(runtime.drain) if signals else None
        if signals:
            starting.add_done_callback(freeze_heap_when_started)
        try:
            yield
        finally:
            runtime.drain.cancel_timer()
            if unhook is not None:
                unhook()
            if not starting.done():
                starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            await runtime.aclose()

    app = Gateway(
        route_handlers=[
            openai.OpenAIController,
            ResponsesController,
            admin.AdminController,
            route.RouteController,
            cost_reports.ReportsController,
            shared_state.StateController,
            ui.UIController,
            traces.TelemetryController,
            *runtime.plugins.extra_routes(),
        ],
        lifespan=[lifespan],
        middleware=[cast(Any, edge_middleware(lambda: runtime.auth, settings.open_schema))],
        request_class=CheckedRequest,
        exception_handlers={
            FreshetError: freshet_error,
            HTTPException: http_error,
            Exception: server_error,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Freshet",
            version=core_version(),
            description="OpenAI-compatible gateway routing on knowledge freshness and cost.",
            path="/schema",
            render_plugins=[SwaggerOffline()],  # no CDN: the viewer's files are ours
        ),
        state=State({"runtime": runtime}),
        logging_config=None,
    )
    if not settings.fast_path:
        log.warning(
            "server.fast_path: false has no effect: the generation endpoints always take "
            "the edge in front of Litestar"
        )
    app.generation = Generation(runtime, settings.max_body_bytes, guard)
    app.guard = guard
    return app
