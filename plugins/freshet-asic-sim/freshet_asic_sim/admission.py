"""What the card offers and accepts: deployments, profile, context and adapter checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from freshet_asic_sim.params import AdapterSpec, AsicParams
from gateway.plugin_api import (
    ContextLengthExceeded,
    Deployment,
    GenerationRequest,
    HardwareProfile,
    InvalidRequest,
    ModelNotFound,
)


def default_profile(p: AsicParams) -> HardwareProfile:
    """The whole backend (all cards), host share included, as the router should quote it.

    The simulation follows the params; a config ``profile:`` only changes what is advertised.
    """
    return HardwareProfile(
        kind="asic",
        watts_idle=p.cards * (p.watts_idle + p.host_watts),
        watts_active=p.cards * (p.watts_active + p.host_watts),
        capex_per_hour=p.cards * p.capex_per_card_hour,
        prefill_tokens_per_s=p.prefill_tokens_per_s,
        decode_tokens_per_s=p.decode_tokens_per_s,
        max_concurrency=p.cards * p.streams_per_card,
        max_context=p.max_context,
    )


def deployments(
    backend_id: str,
    model: str,
    cutoff: dt.date,
    max_context: int,
    adapters: Sequence[AdapterSpec],
) -> tuple[Deployment, ...]:
    """The base model, then one deployment per adapter with its own (or the base) cutoff."""
    base = Deployment(
        backend_id=backend_id, model=model, knowledge_cutoff=cutoff, max_context=max_context
    )
    return (
        base,
        *(
            Deployment(
                backend_id=backend_id,
                model=model,
                adapter=a.name,
                knowledge_cutoff=a.knowledge_cutoff or cutoff,
                max_context=max_context,
            )
            for a in adapters
        ),
    )


def output_budget(
    backend_id: str, params: AsicParams, request: GenerationRequest, prompt: int
) -> int:
    """Output tokens to plan for; prompt + explicit ``max_tokens`` must fit ``max_context``.

    Without ``max_tokens``, ``default_max_tokens`` is capped to what the context leaves.
    """
    cap = params.max_context
    param = "prompt" if request.prompt is not None else "messages"
    if request.max_tokens is None:
        if prompt >= cap:
            raise ContextLengthExceeded(
                f"the prompt has {prompt} tokens; {backend_id} holds at most {cap} tokens "
                "(prompt + output)",
                param=param,
            )
        return min(params.default_max_tokens, cap - prompt)
    if request.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    if prompt + request.max_tokens > cap:
        raise ContextLengthExceeded(
            f"the prompt ({prompt} tokens) plus max_tokens ({request.max_tokens}) exceeds "
            f"the {cap}-token context of {backend_id}",
            param=param,
        )
    return request.max_tokens


def check_adapter(backend_id: str, known: Collection[str], request: GenerationRequest) -> None:
    if request.adapter is None or request.adapter in known:
        return
    raise ModelNotFound(
        f"adapter {request.adapter!r} is not configured on {backend_id} "
        f"(configured: {', '.join(sorted(known)) or 'none'})",
        param="model",
    )
