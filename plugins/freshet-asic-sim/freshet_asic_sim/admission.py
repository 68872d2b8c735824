"""What the card offers and accepts: deployments, profile, context and adapter checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

import msgspec

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
    output_caps: tuple[int | None, int | None] = (None, None),
) -> tuple[Deployment, ...]:
    """The base model, then one deployment per adapter with its own (or the base) cutoff;
    ``output_caps`` is ``(default_output_tokens, max_output_tokens)`` for all of them."""
    default, ceiling = output_caps
    base = Deployment(
        backend_id=backend_id,
        model=model,
        knowledge_cutoff=cutoff,
        max_context=max_context,
        default_output_tokens=default,
        max_output_tokens=ceiling,
    )
    return (
        base,
        *(
            msgspec.structs.replace(
                base, adapter=a.name, knowledge_cutoff=a.knowledge_cutoff or cutoff
            )
            for a in adapters
        ),
    )


def output_budget(
    backend_id: str,
    params: AsicParams,
    request: GenerationRequest,
    prompt: int,
    caps: Deployment | None = None,
) -> int:
    """Output tokens to plan for; prompt + explicit ``max_tokens`` must fit ``max_context``.

    Without ``max_tokens``, the default (``caps``' ``default_output_tokens``, else
    ``default_max_tokens``) is capped to what the context leaves; an explicit one is first
    clamped to ``caps``' ceiling (:meth:`Deployment.output_limit`).
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
        room = cap - prompt
        if caps is None:
            return min(params.default_max_tokens, room)
        return caps.output_limit(None, room) or room
    if request.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    wanted = request.max_tokens
    if caps is not None:
        wanted = caps.output_limit(wanted) or wanted
    if prompt + wanted > cap:
        raise ContextLengthExceeded(
            f"the prompt ({prompt} tokens) plus max_tokens ({wanted}) exceeds "
            f"the {cap}-token context of {backend_id}",
            param=param,
        )
    return wanted


def check_adapter(backend_id: str, known: Collection[str], request: GenerationRequest) -> None:
    if request.adapter is None or request.adapter in known:
        return
    raise ModelNotFound(
        f"adapter {request.adapter!r} is not configured on {backend_id} "
        f"(configured: {', '.join(sorted(known)) or 'none'})",
        param="model",
    )
