"""Freshet's CPU backend: GGUF models through llama.cpp, generation in worker threads.

llama-cpp-python (and numpy with it: ~18 MB resident) is imported when a ``llamacpp``
backend is built, not when the plugin registers, so a gateway with no local model does
not carry it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freshet_llamacpp.simulate import register_simulators as register_simulators
from gateway.plugin_api import Backend, BackendConfig, Fleet, RegisterBackendType, hookimpl

if TYPE_CHECKING:
    from freshet_llamacpp.backend import LlamaCppBackend

__all__ = ["LlamaCppBackend", "create_backend"]


def create_backend(config: BackendConfig, fleet: Fleet) -> Backend:
    from freshet_llamacpp.backend import LlamaCppBackend

    return LlamaCppBackend(config, fleet)


def __getattr__(name: str) -> Any:
    if name == "LlamaCppBackend":
        from freshet_llamacpp.backend import LlamaCppBackend

        return LlamaCppBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_backend_types(register: RegisterBackendType) -> None:
    register("llamacpp", create_backend)
