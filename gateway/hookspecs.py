"""Every hook a Freshet plugin can implement. pluggy project name: ``freshet``.

Registration hooks are synchronous and cheap: they hand objects to a ``register``
callback and return nothing. The objects they register do the real (async) work.
Plugin authors import :data:`hookimpl` from :mod:`gateway` and decorate functions
with the same names as the specs below; ``docs/plugins.md`` documents each one, and
a test fails if a hook here is missing from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "freshet"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_backend_types(register: Callable[[str, Any], None]) -> None:
    """Register backend types by name, for ``type:`` in the config.

    Called once at start, before the config's backends are built. Call
    ``register(type_name, factory)`` where ``factory(config, fleet)`` returns an object
    satisfying :class:`gateway.backend.Backend` (usually the backend class itself).
    Registering a name twice is a config error naming both plugins.
    """


@hookspec
def register_energy_meters(register: Callable[[str, Any], None]) -> None:
    """Register energy meters by name (``nvml``, ``rapl``, ``model``, a smart PDU, ...).

    Called once at start. ``register(name, meter_factory)``; the cost plugin decides
    which meter measures which backend.
    """


@hookspec
def register_cost_models(register: Callable[[str, Any], None]) -> None:
    """Register cost models by name; the config's ``cost: {model: NAME}`` picks one.

    Called once at start. ``register(name, factory)`` where
    ``factory(prices, meters)`` gets the config's ``prices:`` mapping and the registered
    energy meters and returns a :class:`gateway.cost.CostModel`. Without any, the gateway
    charges list prices only and records no joules.
    """


@hookspec
def register_routers(register: Callable[[str, Any], None]) -> None:
    """Register routing policies by name, selectable per group in the config.

    Called once at start. ``register(name, router_factory)``; the default policy is
    ``cheapest-fresh``.
    """


@hookspec
def usage_recorded(record: Any) -> None:
    """Called once for every request that reached a backend, after it ended.

    ``record`` is the request's usage record (tokens, timings, joules, dollars, status).
    Runs off the request's hot path; an implementation may return an awaitable, which
    the gateway awaits. An exception here is logged and never affects the request.
    """


@hookspec
def extra_routes(register: Callable[[Any], None]) -> None:
    """Add HTTP routes to the app (a dashboard page, a webhook).

    Called once while the app is built. ``register(route_handler)`` takes a Litestar
    route handler or controller.
    """
