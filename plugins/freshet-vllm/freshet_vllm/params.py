"""Configuration of a ``vllm`` backend: type-specific keys, adapters, default profile."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct, field

from gateway.plugin_api import (
    DEFAULT_OPERATIONS,
    BackendConfig,
    ConfigError,
    Deployment,
    HardwareProfile,
    Operation,
)

# H100 SXM serving Llama-3.1-8B in bf16 with vLLM (data/profiles-sources.md). Power runs
# from ~300 W at batch 1 to ~600 W at batch 128; the profile holds one figure, so the
# middle of that curve is the default and the curve itself is documented in the README.
GPU_PROFILE = HardwareProfile(
    kind="gpu",
    watts_idle=100.0,
    watts_active=450.0,
    capex_per_hour=2.0,
    prefill_tokens_per_s=20000.0,
    decode_tokens_per_s=160.0,
    max_concurrency=128,
    max_context=131072,
)

Mode = Literal["server", "engine"]
Seconds = Annotated[float, Meta(gt=0)]


class AdapterSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """One LoRA adapter: in mode server, the name vLLM serves it under (``--lora-modules``)."""

    name: str
    knowledge_cutoff: dt.date | None = None
    path: str | None = None  # mode engine: where the adapter's files are


class ServerParams(Struct, kw_only=True, forbid_unknown_fields=True):
    mode: Literal["server"] = "server"
    urls: list[str] = field(default_factory=list)
    served_model: str | None = None
    api_key: str | None = None
    request_timeout_s: Seconds = 120.0  # longest silence: before the first token or between two
    connect_timeout_s: Seconds = 5.0
    poll_interval_s: Seconds = 1.0
    max_backoff_s: Seconds = 10.0
    # Per upstream; beyond it, 429 (the gateway falls back).
    max_in_flight: Annotated[int, Meta(ge=1)] | None = None
    gpu_indices: list[int] = field(default_factory=list)
    # What the served model does: chat and completions by default; a pooling model
    # (vllm serve --task embed) is [embeddings], passed through to its /v1/embeddings.
    operations: frozenset[Operation] = DEFAULT_OPERATIONS


class EngineParams(Struct, kw_only=True, forbid_unknown_fields=True):
    mode: Literal["engine"]
    model_path: str
    served_model: str | None = None
    dtype: str = "auto"
    max_model_len: Annotated[int, Meta(ge=1)] | None = None
    enforce_eager: bool = False
    gpu_memory_utilization: Annotated[float, Meta(gt=0, le=1)] = 0.9
    max_lora_rank: Annotated[int, Meta(ge=1)] = 16
    engine_args: dict[str, object] = field(default_factory=dict)
    gpu_indices: list[int] = field(default_factory=list)


def mode_of(config: BackendConfig) -> str:
    mode = config.params.get("mode", "server")
    if mode not in ("server", "engine"):
        raise ConfigError(
            f"mode must be 'server' or 'engine', got {mode!r}",
            file=config.source,
            key=f"backends[{config.index}].mode",
        )
    return str(mode)


def parse_adapters(config: BackendConfig) -> list[AdapterSpec]:
    try:
        adapters = msgspec.convert(list(config.adapters), list[AdapterSpec], strict=False)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$")
        raise ConfigError(
            message, file=config.source, key=f"backends[{config.index}].adapters{at.rstrip('`')}"
        ) from exc
    names = [a.name for a in adapters]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"duplicate adapter names in {names}",
            file=config.source,
            key=f"backends[{config.index}].adapters",
        )
    return adapters


# What a vLLM server does beyond text, unless the config's ``capabilities`` says: structured
# output always; tool calls only when it runs with --enable-auto-tool-choice (and a tool
# parser), which the config then declares (capabilities: [tools, json_schema]).
SERVER_CAPABILITIES = frozenset(("json_schema",))


def build_deployments(
    config: BackendConfig,
    model: str,
    max_context: int,
    adapters: Sequence[AdapterSpec],
    operations: frozenset[Operation] = DEFAULT_OPERATIONS,
    capabilities: frozenset[str] = frozenset(),
) -> tuple[Deployment, ...]:
    """The base model, then one deployment per adapter (its own cutoff, else the model's).

    Output caps: none of the type's own (vLLM's default is the rest of the context, and a
    paid API has its own); the config's ``default_output_tokens`` / ``max_output_tokens``
    are sent upstream as ``max_tokens``.
    """
    default, ceiling = config.output_caps(None, None)
    base = Deployment(
        backend_id=config.id,
        model=model,
        knowledge_cutoff=config.knowledge_cutoff,
        max_context=max_context,
        default_output_tokens=default,
        max_output_tokens=ceiling,
        operations=operations,
        capabilities=config.capabilities_or(capabilities),
    )
    return (
        base,
        *(
            msgspec.structs.replace(
                base,
                adapter=a.name,
                knowledge_cutoff=a.knowledge_cutoff or config.knowledge_cutoff,
            )
            for a in adapters
        ),
    )


def config_error(config: BackendConfig, key: str, reason: str) -> ConfigError:
    return ConfigError(reason, file=config.source, key=f"backends[{config.index}].{key}")
