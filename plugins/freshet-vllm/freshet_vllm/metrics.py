"""The three load figures Freshet reads from a vLLM server's Prometheus ``/metrics``."""

from __future__ import annotations

from msgspec import Struct

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
# Name of the KV-cache gauge before vLLM 0.10.
KV_CACHE_OLD = "vllm:gpu_cache_usage_perc"


class Load(Struct, kw_only=True):
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0  # 0..1


class MetricsError(ValueError):
    """The text is not vLLM's metrics (e.g. another server on that port)."""


def parse_load(text: str) -> Load:
    """Sum each gauge over its label sets (one per engine or model); max for the KV cache.

    Scans line prefixes only: the page is mostly histograms Freshet does not need.
    """
    running = waiting = 0.0
    kv = 0.0
    seen = False
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        if name not in (RUNNING, WAITING, KV_CACHE, KV_CACHE_OLD):
            continue
        value = _value(rest)
        if value is None:
            continue
        seen = True
        if name == RUNNING:
            running += value
        elif name == WAITING:
            waiting += value
        else:
            kv = max(kv, value)
    if not seen:
        raise MetricsError(f"no {RUNNING} or {WAITING} in the metrics")
    return Load(running=round(running), waiting=round(waiting), kv_cache_usage=kv)


def _value(rest: str) -> float | None:
    # `{labels} value [timestamp]` or ` value [timestamp]`; labels may contain spaces.
    tail = rest.rpartition("}")[2] if "}" in rest else rest
    parts = tail.split()
    if not parts:
        return None
    try:
        return float(parts[0])
    except ValueError:
        return None
