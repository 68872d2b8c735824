"""Freshet's GPU backend: vLLM servers over HTTP (mode ``server``) or vLLM in-process
(mode ``engine``), backend type ``vllm``; and, on the same HTTP path, any other
OpenAI-compatible server by URL, backend type ``openai-compatible``."""

from __future__ import annotations

from freshet_vllm.openai_compatible import OpenAICompatibleBackend
from freshet_vllm.params import mode_of
from freshet_vllm.server import VllmServerBackend
from freshet_vllm.simulate import register_simulators as register_simulators
from gateway.plugin_api import Backend, BackendConfig, Fleet, RegisterBackendType, hookimpl

__all__ = ["OpenAICompatibleBackend", "VllmServerBackend", "create_backend"]


def create_backend(config: BackendConfig, fleet: Fleet) -> Backend:
    if mode_of(config) == "engine":
        # Imported only when asked for: it is the one module that may import vllm.
        from freshet_vllm.engine import VllmEngineBackend

        return VllmEngineBackend(config, fleet)
    return VllmServerBackend(config, fleet)


@hookimpl
def register_backend_types(register: RegisterBackendType) -> None:
    register("vllm", create_backend)
    register("openai-compatible", OpenAICompatibleBackend)
