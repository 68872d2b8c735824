"""The ``llamacpp`` backend's performance model for ``freshet replay``.

As the live backend: ``instances`` model copies, each serving one request at a time,
behind one queue of at most ``queue_limit`` waiting requests (beyond: 429, and the router
falls back). A request takes ``prompt / prefill_tokens_per_s + output / decode_tokens_per_s``
from the profile: the figures measured on this machine when the backend calibrated itself
(write them into the config's ``profile:`` to replay elsewhere), else the defaults measured
on this project's 2-vCPU machines (``data/profiles-sources.md``). Its output is capped as
live (``max_output_tokens``, 2,048 by default) and must fit ``n_ctx`` with the prompt.
Power follows the profile (1 W idle to 6 W with every instance busy, by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import Struct

from gateway.plugin_api import (
    Backend,
    BackendConfig,
    PooledSimulator,
    RegisterSimulator,
    ServerPool,
    SimRequest,
    convert_section,
    hookimpl,
    profile_watts,
    with_output,
)


class _NoOptions(Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class LlamaCppSimulator(PooledSimulator):
    def __init__(self, backend: Backend, config: BackendConfig, options: Mapping[str, Any]) -> None:
        convert_section(dict(options), _NoOptions, None, f"--sim {config.id}")
        profile = backend.profile
        self._caps = backend.deployments[0]
        # Validated by the backend already.
        instances = int(config.params.get("instances", 1))
        queue_limit = int(config.params.get("queue_limit", 16))
        self._pool = ServerPool(
            backend_id=config.id,
            servers=instances,
            queue_limit=queue_limit,
            prefill_tokens_per_s=profile.prefill_tokens_per_s,
            decode_tokens_per_s=profile.decode_tokens_per_s,
            watts=profile_watts(profile),
            max_context=self._caps.max_context,
        )

    def submit(self, request: SimRequest) -> None:
        output = self._caps.output_limit(request.output_tokens) or request.output_tokens
        # The live backend stops at its cap, and at the end of the context.
        self._pool.submit(with_output(request, output))


@hookimpl
def register_simulators(register: RegisterSimulator) -> None:
    register("llamacpp", LlamaCppSimulator)
