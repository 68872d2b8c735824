"""Freshet's GPU backend: vLLM servers over HTTP (mode ``server``) or vLLM in-process
(mode ``engine``). Backend type ``vllm``."""

from __future__ import annotations

from typing import Any

from freshet_vllm.params import mode_of
from freshet_vllm.server import VllmServerBackend
from gateway import hookimpl
from gateway.backend import Backend, BackendConfig, Fleet

__all__ = ["VllmServerBackend", "create_backend"]


def create_backend(config: BackendConfig, fleet: Fleet) -> Backend:
    if mode_of(config) == "engine":
        # Imported only when asked for: it is the one module that may import vllm.
        from freshet_vllm.engine import VllmEngineBackend

        return VllmEngineBackend(config, fleet)
    return VllmServerBackend(config, fleet)


@hookimpl
def register_backend_types(register: Any) -> None:
    register("vllm", create_backend)
