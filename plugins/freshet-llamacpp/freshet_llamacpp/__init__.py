"""Freshet's CPU backend: GGUF models through llama.cpp, generation in worker threads."""

from __future__ import annotations

import atexit
from typing import Any

import llama_cpp._utils

from freshet_llamacpp.backend import LlamaCppBackend
from gateway import hookimpl

__all__ = ["LlamaCppBackend"]


def _close_devnull_at_exit() -> None:
    """llama-cpp-python opens os.devnull twice at import and never closes it, which shows
    up as a ResourceWarning at every interpreter exit; close them at exit instead."""
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(llama_cpp._utils, name, None)
        if handle is not None:
            atexit.register(handle.close)


_close_devnull_at_exit()


@hookimpl
def register_backend_types(register: Any) -> None:
    register("llamacpp", LlamaCppBackend)
