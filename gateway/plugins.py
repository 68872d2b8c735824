"""The one place that touches ``pm.hook``: a small typed facade over pluggy.

Built-in plugins are registered exactly like third-party ones; everything else is found
through the ``freshet`` entry-point group of installed distributions.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pluggy
from msgspec import Struct

from gateway import hookspecs
from gateway.backend import BackendFactory
from gateway.cost import CostModelFactory, MeterFactory
from gateway.errors import ConfigError
from gateway.hookspecs import RouterFactory
from gateway.outcome import UsageRecord
from gateway.simulator import SimulatorFactory

F = TypeVar("F")

log = logging.getLogger(__name__)

# The core's distribution name on the package index ("freshet" there is another project).
DISTRIBUTION = "freshet-gateway"

# Built into the core distribution; registered under these names through the same hooks.
BUILTINS: tuple[tuple[str, str], ...] = (
    ("deterministic", "gateway.builtins.deterministic"),
    ("routing", "gateway.builtins.routers"),
    ("simulators", "gateway.builtins.simulate"),
)


class PluginInfo(Struct, kw_only=True):
    name: str
    distribution: str
    version: str
    hooks: list[str]
    builtin: bool


class Plugins:
    """Loads plugins once and answers typed questions about them."""

    def __init__(self, *, blocked: Iterable[str] = (), entry_points: bool = True) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._builtin: set[str] = set()
        for name in blocked:
            self._pm.set_blocked(name)
        for name, module in BUILTINS:
            if not self._pm.is_blocked(name):
                self._pm.register(importlib.import_module(module), name)
                self._builtin.add(name)
        if entry_points:
            self._pm.load_setuptools_entrypoints(hookspecs.PROJECT)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        self._pm.register(plugin, name)

    def _collect(
        self, spec: Callable[[Callable[[str, F], None]], None]
    ) -> dict[str, tuple[str, F]]:
        """Call every implementation of the registration hook ``spec`` with a ``register``
        that refuses a name already registered by another plugin. The spec's own type
        (``register: Callable[[str, F], None]``) is what types the result."""
        hook_name = spec.__name__
        found: dict[str, tuple[str, F]] = {}
        caller: pluggy.HookCaller = getattr(self._pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            plugin_name = impl.plugin_name

            def register(name: str, factory: F, _plugin: str = plugin_name) -> None:
                if name in found and found[name][0] != _plugin:
                    raise ConfigError(
                        f"{hook_name}: {name!r} is registered by both "
                        f"{found[name][0]!r} and {_plugin!r}"
                    )
                found[name] = (_plugin, factory)

            impl.function(register=register)
        return found

    def backend_types(self) -> dict[str, BackendFactory]:
        found = self._collect(hookspecs.register_backend_types)
        return {name: factory for name, (_, factory) in found.items()}

    def backend_type_owners(self) -> dict[str, str]:
        found = self._collect(hookspecs.register_backend_types)
        return {name: owner for name, (owner, _) in found.items()}

    def energy_meters(self) -> dict[str, MeterFactory]:
        found = self._collect(hookspecs.register_energy_meters)
        return {name: factory for name, (_, factory) in found.items()}

    def cost_models(self) -> dict[str, CostModelFactory]:
        found = self._collect(hookspecs.register_cost_models)
        return {name: factory for name, (_, factory) in found.items()}

    def routers(self) -> dict[str, RouterFactory]:
        found = self._collect(hookspecs.register_routers)
        return {name: factory for name, (_, factory) in found.items()}

    def simulators(self) -> dict[str, SimulatorFactory]:
        """Each backend type's performance model for ``freshet replay``, by type name."""
        found = self._collect(hookspecs.register_simulators)
        return {name: factory for name, (_, factory) in found.items()}

    def extra_routes(self) -> list[Any]:
        # Litestar's route handlers: the core does not know their type (see
        # hookspecs.RouteHandler); the app hands them to Litestar.
        routes: list[Any] = []
        self._pm.hook.extra_routes(register=routes.append)
        return routes

    def wants_usage(self) -> bool:
        """Whether any plugin implements ``usage_recorded`` (so the gateway can skip
        scheduling a task per request when none does)."""
        return bool(self._pm.hook.usage_recorded.get_hookimpls())

    async def usage_recorded(self, record: UsageRecord) -> None:
        """Tell every plugin about a finished request; a failing plugin is logged, not fatal."""
        for impl in self._pm.hook.usage_recorded.get_hookimpls():
            try:
                result = impl.function(record=record)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %s failed in usage_recorded", impl.plugin_name)

    def info(self) -> list[PluginInfo]:
        dists: dict[int, Any] = {
            id(plugin): dist for plugin, dist in self._pm.list_plugin_distinfo()
        }
        own_version = core_version()
        out: list[PluginInfo] = []
        for name, plugin in self._pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(caller.name for caller in self._pm.get_hookcallers(plugin) or [])
            dist = dists.get(id(plugin))
            out.append(
                PluginInfo(
                    name=name,
                    distribution=dist.project_name if dist else DISTRIBUTION,
                    version=dist.version if dist else own_version,
                    hooks=hooks,
                    builtin=name in self._builtin,
                )
            )
        return sorted(out, key=lambda p: (not p.builtin, p.name))


def core_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
