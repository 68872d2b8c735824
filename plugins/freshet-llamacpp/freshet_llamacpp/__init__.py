"""Freshet's CPU backend: GGUF models through llama.cpp, generation in worker threads."""

from __future__ import annotations

from typing import Any

from freshet_llamacpp.backend import LlamaCppBackend
from gateway import hookimpl

__all__ = ["LlamaCppBackend"]


@hookimpl
def register_backend_types(register: Any) -> None:
    register("llamacpp", LlamaCppBackend)
