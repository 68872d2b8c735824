"""The load figures Freshet reads from a vLLM server's Prometheus ``/metrics``: requests
running and waiting, KV-cache use, and the requests' end-to-end time (for the work the
server has committed, ``BackendStatus.busy_s``)."""

from __future__ import annotations

from msgspec import Struct

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
# Name of the KV-cache gauge before vLLM 0.10.
KV_CACHE_OLD = "vllm:gpu_cache_usage_perc"
# The end-to-end request time histogram: its sum and count give the mean request time.
E2E_SUM = "vllm:e2e_request_latency_seconds_sum"
E2E_COUNT = "vllm:e2e_request_latency_seconds_count"


class Load(Struct, kw_only=True):
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0  # 0..1
    e2e_sum_s: float = 0.0  # seconds, over every finished request since the server started
    e2e_count: float = 0.0

    def busy_s(self, slots: int) -> float | None:
        """Seconds until a request sent now could start: 0 when a slot is free and nobody
        waits; else the requests ahead of it, ``slots`` at a time, each taking the mean
        request time since the server started. None when that is not known yet."""
        ahead = self.running + self.waiting + 1 - max(1, slots)
        if ahead <= 0:
            return 0.0
        if self.e2e_count <= 0:
            return None
        return ahead * (self.e2e_sum_s / self.e2e_count) / max(1, slots)


class MetricsError(ValueError):
    """The text is not vLLM's metrics (e.g. another server on that port)."""


def parse_load(text: str) -> Load:
    """Sum each gauge over its label sets (one per engine or model); max for the KV cache.

    Scans line prefixes only: the page is mostly histograms Freshet does not need.
    """
    running = waiting = 0.0
    kv = 0.0
    e2e_sum = e2e_count = 0.0
    seen = False
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        if name not in (RUNNING, WAITING, KV_CACHE, KV_CACHE_OLD, E2E_SUM, E2E_COUNT):
            continue
        value = _value(rest)
        if value is None:
            continue
        if name == E2E_SUM:
            e2e_sum += value
            continue
        if name == E2E_COUNT:
            e2e_count += value
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
    return Load(
        running=round(running),
        waiting=round(waiting),
        kv_cache_usage=kv,
        e2e_sum_s=e2e_sum,
        e2e_count=e2e_count,
    )


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
