"""The configured backends, built through the plugin hook, and the names clients can ask for."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence

from msgspec import Struct

from gateway.backend import Backend, BackendConfig, Deployment
from gateway.errors import ConfigError, ModelNotFound
from gateway.plugins import Plugins
from gateway.settings import Settings, did_you_mean

log = logging.getLogger(__name__)


# The backend types of the plugins in the Freshet repository's plugins/ folder, and their
# distributions. They install from that folder (they are not on the package index).
REPO_PLUGIN_TYPES: Mapping[str, str] = {
    "llamacpp": "freshet-llamacpp",
    "vllm": "freshet-vllm",
    "openai-compatible": "freshet-vllm",
    "asic-sim": "freshet-asic-sim",
}


def install_hint(backend_type: str) -> str:
    """Where a missing backend type comes from: a repository plugin, or any entry point."""
    dist = REPO_PLUGIN_TYPES.get(backend_type)
    if dist is not None:
        return (
            f"it comes with the plugin {dist}: install it from the Freshet repository, "
            f"pip install ./plugins/{dist}"
        )
    repo = ", ".join(f"{t} ({d})" for t, d in sorted(REPO_PLUGIN_TYPES.items()))
    return (
        "install a plugin that registers it under the entry-point group 'freshet'; "
        f"the Freshet repository's plugins/ folder has {repo}"
    )


class Entry(Struct, kw_only=True, frozen=True):
    """A name in ``model``: one deployment, an adapter, or a group of deployments."""

    name: str
    kind: str  # "model" | "adapter" | "group"
    deployments: tuple[Deployment, ...]

    @property
    def knowledge_cutoff(self) -> dt.date | None:
        cutoffs = [d.knowledge_cutoff for d in self.deployments if d.knowledge_cutoff]
        return max(cutoffs) if cutoffs else None


class Fleet:
    """Owns every backend object; implements :class:`gateway.backend.Fleet` for factories."""

    def __init__(self, settings: Settings, plugins: Plugins) -> None:
        self._types = plugins.backend_types()
        self._configs: dict[str, BackendConfig] = {c.id: c for c in settings.backends}
        self._backends: dict[str, Backend] = {}
        # While building, ``get`` builds a backend another one refers to (a twin) first, so
        # a reference to an id that is not configured is a config error at load, not at start.
        self._building: list[str] = []
        for config in settings.backends:
            self.get(config.id)
        self._backends = {c.id: self._backends[c.id] for c in settings.backends}  # config order
        self._building = []
        self.catalog = Catalog(
            self._backends, settings.groups, settings.routing.adapters_by_name_only
        )

    def _build(self, config: BackendConfig) -> Backend:
        factory = self._types.get(config.type)
        if factory is None:
            known = ", ".join(sorted(self._types)) or "none"
            near = did_you_mean(config.type, self._types)  # a typo: no need to install
            raise ConfigError(
                f"unknown backend type {config.type!r}{near} (installed types: {known})"
                + ("" if near else "; " + install_hint(config.type)),
                file=config.source,
                key=f"backends[{config.index}].type",
            )
        self._building.append(config.id)
        backend = factory(config, self)
        self._building.pop()
        if not isinstance(backend, Backend):
            raise ConfigError(
                f"backend type {config.type!r} built an object that is not a Backend",
                file=config.source,
                key=f"backends[{config.index}].type",
            )
        return backend

    def get(self, backend_id: str) -> Backend:
        backend = self._backends.get(backend_id)
        if backend is not None:
            return backend
        config = self._configs.get(backend_id)
        if config is None:
            raise ConfigError(
                f"no backend with id {backend_id!r}{did_you_mean(backend_id, self._configs)} "
                f"(the fleet has {', '.join(self._configs)})"
            )
        if backend_id in self._building:  # a refers to b, which refers (maybe via c) to a
            cycle = " -> ".join([*self._building[self._building.index(backend_id) :], backend_id])
            raise ConfigError(f"backends refer to each other in a cycle: {cycle}")
        self._backends[backend_id] = backend = self._build(config)
        return backend

    def config(self, backend_id: str) -> BackendConfig:
        return self._configs[backend_id]

    @property
    def backends(self) -> Mapping[str, Backend]:
        return self._backends

    async def start(self) -> None:
        for backend in self._backends.values():
            await backend.start()

    async def aclose(self) -> None:
        results = await asyncio.gather(
            *(b.aclose() for b in self._backends.values()), return_exceptions=True
        )
        for backend_id, result in zip(self._backends, results, strict=True):
            if isinstance(result, BaseException):
                log.error("closing backend %s failed: %r", backend_id, result)


class Catalog:
    """Maps every name a client may put in ``model`` to its deployments, built once.

    A base model's name and a group that names a backend also reach that backend's LoRA
    adapter deployments (each with its own cutoff), after the base deployments so that a
    tie goes to the base; ``model:adapter`` is the adapter alone. ``adapters_by_name_only``
    leaves adapters reachable only by their own name. The lists are expanded here, once,
    so the router's loop sees plain candidates.
    """

    def __init__(
        self,
        backends: Mapping[str, Backend],
        groups: Mapping[str, Sequence[str]],
        adapters_by_name_only: bool = False,
    ) -> None:
        entries: dict[str, list[Deployment]] = {}
        kinds: dict[str, str] = {}
        for backend in backends.values():
            for dep in backend.deployments:
                entries.setdefault(dep.name, []).append(dep)
                kinds[dep.name] = "adapter" if dep.adapter else "model"
        if not adapters_by_name_only:
            for backend in backends.values():
                for dep in backend.deployments:
                    base = entries.get(dep.model)
                    if dep.adapter and base is not None and kinds[dep.model] == "model":
                        base.append(dep)
        for group, members in groups.items():
            if group in entries:
                raise ConfigError(
                    f"group name {group!r} is also a model name", key=f"groups.{group}"
                )
            deps = [d for m in members for d in backends[m].deployments if not d.adapter]
            if not adapters_by_name_only:
                deps += [d for m in members for d in backends[m].deployments if d.adapter]
            entries[group] = deps
            kinds[group] = "group"
        self._entries = {
            name: Entry(name=name, kind=kinds[name], deployments=tuple(deps))
            for name, deps in entries.items()
        }

    def resolve(self, name: str) -> Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFound(
                f"The model {name!r} does not exist. Available: {', '.join(sorted(self._entries))}",
                param="model",
            )
        return entry

    def entries(self) -> Sequence[Entry]:
        return list(self._entries.values())
