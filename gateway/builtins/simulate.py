"""The ``deterministic`` backend's performance model for ``freshet replay``: its own pace.

As the live backend: every request runs at once (no queue), its tokens come one every
``1 / tokens_per_s`` seconds (0: no time at all), its output is cut to what the context
leaves, and a prompt that fills the context is refused. Its energy follows its profile
(no watts unless configured).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import Struct

from gateway.plugin_api import (
    Backend,
    BackendConfig,
    ContextLengthExceeded,
    PooledSimulator,
    RegisterSimulator,
    ServerPool,
    SimRequest,
    convert_params,
    convert_section,
    hookimpl,
    profile_watts,
    with_output,
)


class _Pace(Struct, kw_only=True):
    tokens_per_s: float = 0.0
    max_context: int = 4096


class _NoOptions(Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class DeterministicSimulator(PooledSimulator):
    def __init__(self, backend: Backend, config: BackendConfig, options: Mapping[str, Any]) -> None:
        convert_section(dict(options), _NoOptions, None, f"--sim {config.id}")
        params = convert_params(_only(config, _Pace.__struct_fields__), _Pace)
        self._id = config.id
        self._max_context = params.max_context
        self._caps = backend.deployments[0]
        self._pool = ServerPool(
            backend_id=config.id,
            servers=None,
            queue_limit=None,
            prefill_tokens_per_s=0.0,
            decode_tokens_per_s=params.tokens_per_s,
            watts=profile_watts(backend.profile),
        )

    def submit(self, request: SimRequest) -> None:
        room = self._max_context - request.prompt_tokens
        if room <= 0:
            raise ContextLengthExceeded(
                f"prompt has {request.prompt_tokens} tokens; {self._id} accepts at most "
                f"{self._max_context - 1}",
                param="messages",
            )
        output = min(self._caps.output_limit(request.output_tokens, room) or room, room)
        # The live backend stops at its cap, and at the end of the context.
        self._pool.submit(with_output(request, output))


def _only(config: BackendConfig, keys: tuple[str, ...]) -> BackendConfig:
    """``config`` with only the type parameters the model reads (the rest is the backend's
    to check, and it has)."""
    params = {k: v for k, v in config.params.items() if k in keys}
    return BackendConfig(id=config.id, type=config.type, params=params, index=config.index)


@hookimpl
def register_simulators(register: RegisterSimulator) -> None:
    register("deterministic", DeterministicSimulator)


__all__ = ["DeterministicSimulator", "register_simulators"]
