"""Every hook a Freshet plugin can implement. pluggy project name: ``freshet``.

Registration hooks run once, synchronously, while the gateway starts (or, for
:func:`extra_routes`, while its app is built). They hand objects to a ``register``
callback and return nothing; the objects they register do the real (async) work. Every
implementation of a registration hook is called (there is no "first result"); a name
registered by two plugins is a config error naming both.

Plugin authors import everything named here from :mod:`gateway.plugin_api` and decorate
functions with the same names as the specs below with :data:`hookimpl`;
``docs/plugins.md`` documents each one, and a test fails if a hook here is missing from it.
Only :mod:`gateway.plugins` calls these hooks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

import pluggy

from gateway.backend import BackendFactory
from gateway.cost import CostModelFactory, MeterFactory
from gateway.outcome import UsageRecord
from gateway.routing import Router
from gateway.simulator import SimulatorFactory

PROJECT = "freshet"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

RouterFactory = Callable[[], Router]
"""Makes one routing policy (usually the router class itself); called once per gateway."""

RegisterBackendType = Callable[[str, BackendFactory], None]
"""``register(type_name, factory)``: see :func:`register_backend_types`."""

RegisterEnergyMeter = Callable[[str, MeterFactory], None]
"""``register(name, meter_factory)``: see :func:`register_energy_meters`."""

RegisterCostModel = Callable[[str, CostModelFactory], None]
"""``register(name, cost_model_factory)``: see :func:`register_cost_models`."""

RegisterRouter = Callable[[str, RouterFactory], None]
"""``register(name, router_factory)``: see :func:`register_routers`."""

RegisterSimulator = Callable[[str, SimulatorFactory], None]
"""``register(type_name, simulator_factory)``: see :func:`register_simulators`."""

RouteHandler: TypeAlias = object
"""A Litestar route handler, controller or router: what Litestar's ``route_handlers=``
takes. Opaque to the core (its contracts do not load the HTTP framework): the app hands it
to Litestar, which checks it when the app is built."""

RegisterRoute = Callable[[RouteHandler], None]
"""``register(route_handler)``: see :func:`extra_routes`."""


@hookspec
def register_backend_types(register: RegisterBackendType) -> None:
    """Register backend types by name, for ``type:`` in the config.

    When: once at start, before the config's backends are built. All implementations
    are called.

    Call ``register(type_name, factory)`` where ``factory(config, fleet)`` returns an
    object satisfying :class:`~gateway.backend.Backend` (usually the backend class
    itself). Registering a name twice is a config error naming both plugins.
    """


@hookspec
def register_energy_meters(register: RegisterEnergyMeter) -> None:
    """Register energy meters by name (``nvml``, ``rapl``, ``model``, a smart PDU, ...).

    When: once at start, before the cost model is built. All implementations are called.

    Call ``register(name, meter_factory)`` where ``meter_factory(settings, backend,
    watts_at)`` returns an :class:`~gateway.cost.EnergyMeter` for one backend. The cost
    model decides which meter measures which backend (a backend's ``energy: {meter:
    NAME}``, or by its hardware kind).
    """


@hookspec
def register_cost_models(register: RegisterCostModel) -> None:
    """Register cost models by name; the config's ``cost: {model: NAME}`` picks one.

    When: once at start. All implementations are called; only the chosen model is built.

    Call ``register(name, factory)`` where ``factory(prices, meters)`` gets the config's
    ``prices:`` mapping and the registered energy meters and returns a
    :class:`~gateway.cost.CostModel`. Without any, the gateway charges list prices only
    and records no joules.
    """


@hookspec
def register_routers(register: RegisterRouter) -> None:
    """Register routing policies by name, selectable per group in the config.

    When: once at start. All implementations are called.

    Call ``register(name, router_factory)`` where ``router_factory()`` returns a
    :class:`~gateway.routing.Router`; the default policy is ``cheapest-fresh``.
    """


@hookspec
def register_simulators(register: RegisterSimulator) -> None:
    """Register a performance model for a backend type, for ``freshet replay``.

    When: once when a replay starts, before its fleets are built (never while serving). All
    implementations are called.

    Call ``register(type_name, factory)`` with the same type name as in
    :func:`register_backend_types`; ``factory(backend, config, options)`` returns a
    :class:`~gateway.simulator.Simulator` for one configured backend: its timing, queueing
    and energy on a simulated clock (:class:`~gateway.simulator.ServerPool` models a queue
    in front of identical servers). A backend type without one cannot be replayed (an
    error naming it). Registering a type twice is a config error naming both plugins.
    """


@hookspec
def usage_recorded(record: UsageRecord) -> Awaitable[None] | None:
    """Called once for every request that reached a backend, after it ended.

    When: after the request's usage record went to the ledger, off the request's hot path. All
    implementations are called, one after another; an implementation may be ``async``
    (or return an awaitable), which the gateway awaits. Its result is otherwise ignored.
    An exception here is logged and never affects the request or the other plugins.
    ``record`` must not be changed.
    """


@hookspec
def extra_routes(register: RegisterRoute) -> None:
    """Add HTTP routes to the app (a dashboard page, a webhook).

    When: once while the app is built. All implementations are called.

    Call ``register(route_handler)`` with a Litestar route handler or controller.
    """
