"""The ``asic-sim`` backend's configuration: every figure is a parameter with a sourced default.

Defaults come from ``data/profiles-sources.md`` ("Etched ASIC (Taalas HC1-like)"): decode
16,000 tok/s per stream (vendor claims ~17k, demos 14.4-17k), 200 W per card (+50 W host
share from the 2,500 W / 10-card server), 80 W idle, 100k tok/s prefill, 10 ms LoRA swap
and one stream per card (assumed), $0.45 per card-hour (derived from $0.0075/Mtok).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from gateway.plugin_api import BackendConfig, ConfigError, convert_params

DEFAULT_MODEL = "llama-3.1-8b"
# Llama 3.1 model card: "December 2023"; the first of the month is the conservative date.
DEFAULT_KNOWLEDGE_CUTOFF = dt.date(2023, 12, 1)

Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]
Count = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]


class AsicParams(Struct, kw_only=True, forbid_unknown_fields=True):
    """Type-specific keys of a ``type: asic-sim`` backend entry."""

    decode_tokens_per_s: Positive = 16_000.0  # per stream
    prefill_tokens_per_s: Positive = 100_000.0  # per stream
    cards: Count = 1
    streams_per_card: Count = 1
    max_context: Count = 2048  # prompt + max output tokens
    watts_active: NonNegative = 200.0  # per card, all its streams busy
    watts_idle: NonNegative = 80.0  # per card
    host_watts: NonNegative = 50.0  # per card: its share of the host server, always drawn
    capex_per_card_hour: NonNegative = 0.45
    lora_slots: NonNegativeInt = 4  # adapters resident per card (LRU)
    lora_swap_s: NonNegative = 0.010
    queue_limit: NonNegativeInt = 64  # requests waiting for a stream; beyond -> 429
    time_scale: Positive = 1.0  # wall seconds per simulated second
    twin: str | None = None  # backend id whose text this card serves
    default_max_tokens: Count = 256
    coalesce: bool = True  # one chunk per wake-up instead of one per token


class AdapterSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """One entry of ``adapters:``: a LoRA adapter, optionally with a later cutoff."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    knowledge_cutoff: dt.date | None = None


def load_params(config: BackendConfig) -> AsicParams:
    params = convert_params(config, AsicParams)
    if params.twin is not None and params.twin == config.id:
        raise ConfigError(
            "a backend cannot be its own twin", file=config.source, key=_key(config, "twin")
        )
    return params


def load_adapters(config: BackendConfig) -> tuple[AdapterSpec, ...]:
    """Validate ``adapters:``; errors name ``backends[i].adapters[j]``."""
    out: list[AdapterSpec] = []
    seen: set[str] = set()
    entries: Sequence[object] = config.adapters
    for j, entry in enumerate(entries):
        key = _key(config, f"adapters[{j}]")
        try:
            spec = msgspec.convert(entry, AdapterSpec, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(str(exc), file=config.source, key=key) from exc
        if spec.name in seen:
            raise ConfigError(f"duplicate adapter {spec.name!r}", file=config.source, key=key)
        seen.add(spec.name)
        out.append(spec)
    return tuple(out)


def _key(config: BackendConfig, name: str) -> str:
    return f"backends[{config.index}].{name}"
