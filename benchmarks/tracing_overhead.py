"""What tracing adds to the gateway's latency: tracing on (spans kept in memory and
exported over OTLP/HTTP to a receiver on loopback, metrics exported too) against tracing
off (``OTEL_SDK_DISABLED=true``: no spans, no propagation; ``/metrics`` still counts), as
ratios measured in the same run, next to a bare ASGI app for the gateway's own share, and
the embedded default (spans kept in memory for ``/freshet/ui``, no exporter) in between.
Each server's CPU time per request (all its threads, from /proc) is reported too: the
cost that latency on an idle machine hides.

The three servers run side by side and are measured in alternating blocks of requests
(never concurrently: they share the cores), so drift in the machine's load hits all of
them alike. Even so, two identical servers differ by up to ±7 % in one run
(where the scheduler happens to put each process): read a ratio within that as equal.
The receiver runs in a process of its own so its work does not slow the
measuring client. Requests are sequential on one keep-alive connection per server, on
the deterministic backend (no model work): the worst case for relative overhead.

A second part measures what the issue's target names, the gateway's *added* latency:
tracing-off and tracing-on gateways in front of the mock OpenAI upstream
(benchmarks/mock_upstream.py, answering after 20 ms), with the upstream called directly
in the same alternation; added latency = a block's p50 minus the adjacent direct block's.
It runs in sessions of fresh processes (placement again), and reports the median of
on/off over all rounds. There the event loop waits on the upstream most of the time, and
the exporter does its work in those moments (gateway.telemetry.export.IdleGate).

Run:  .venv/bin/python benchmarks/tracing_overhead.py [--requests 6000] [--block 100]
          [--upstream-sessions 4] [--upstream-rounds 25] [--upstream-ms 20]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import _baseline_server, _percentile  # noqa: E402
from benchmarks.peer_procs import MODEL, freshet_config  # noqa: E402
from benchmarks.peers import mock_upstream  # noqa: E402
from tests.support.server import free_port, running_server  # noqa: E402

CONFIG = {
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
JSON_BODY = json.dumps(
    {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
).encode()
STREAM_BODY = json.dumps(
    {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.otlp", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", self.port, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.05)

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return out.strip()


UPSTREAM_JSON = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
).encode()
UPSTREAM_STREAM = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
        "stream": True,
    }
).encode()


def _block(conn: http.client.HTTPConnection, body: bytes, n: int) -> list[float]:
    headers = {"content-type": "application/json"}
    out = []
    for _ in range(n):
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        out.append((time.perf_counter() - started) * 1000)
    return out


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Runs:
    """Per server: every latency, each block's median, and CPU seconds used."""

    def __init__(self, names: list[str]) -> None:
        self.latencies: dict[str, list[float]] = {n: [] for n in names}
        self.block_p50: dict[str, list[float]] = {n: [] for n in names}
        self.cpu_s: dict[str, float] = dict.fromkeys(names, 0.0)

    def paired_ratio(self, a: str, b: str) -> float:
        """Median over block pairs (measured back to back) of p50(a) / p50(b)."""
        pairs = zip(self.block_p50[a], self.block_p50[b], strict=True)
        return statistics.median(x / y for x, y in pairs)


def _alternate(
    servers: dict[str, tuple[int, int | None]], body: bytes, requests: int, block: int
) -> Runs:
    """``servers``: name -> (port, pid). Blocks alternate in order, reversed every block."""
    conns = {
        name: http.client.HTTPConnection("127.0.0.1", port) for name, (port, _) in servers.items()
    }
    for conn in conns.values():
        _block(conn, body, 50)  # warm-up, excluded
    names = list(servers)
    runs = Runs(names)
    for i in range(max(1, requests // block)):
        for name in names if i % 2 == 0 else names[::-1]:
            pid = servers[name][1]
            cpu = _cpu_s(pid)
            values = _block(conns[name], body, block)
            runs.cpu_s[name] += _cpu_s(pid) - cpu
            runs.latencies[name] += values
            runs.block_p50[name].append(statistics.median(values))
    for conn in conns.values():
        conn.close()
    return runs


def _upstream_session(
    url: str, tmp: Path, session: int, args: argparse.Namespace, on_env: dict[str, str]
) -> list[tuple[str, list[float]]]:
    """Fresh tracing-off and tracing-on gateways in front of the upstream, measured in
    alternation with the upstream direct: per round, (on - direct) / (off - direct) of the
    blocks' p50s. Fresh processes each session, because a process keeps the placement
    the scheduler gave it, which shifts its latency by a few per cent for its lifetime."""
    config = freshet_config(url)
    for name in ("off", "on"):
        (tmp / f"up-{name}-{session}").mkdir()
    with (
        running_server(tmp / f"up-off-{session}", config, env={"OTEL_SDK_DISABLED": "true"}) as off,
        running_server(tmp / f"up-on-{session}", config, env=on_env) as on,
    ):
        servers = {
            "direct": (int(url.rsplit(":", 1)[1]), None),
            "off": (off.port, off.proc.pid),
            "on": (on.port, on.proc.pid),
        }
        out = []
        for label, body in (
            ("JSON, 1 token", UPSTREAM_JSON),
            ("SSE, 16 chunks 1 ms apart", UPSTREAM_STREAM),
        ):
            runs = _alternate(
                servers, body, args.upstream_rounds * args.upstream_block, args.upstream_block
            )
            d = runs.block_p50["direct"]
            pairs = zip(runs.block_p50["on"], runs.block_p50["off"], d, strict=True)
            out.append((label, [(x - y) / (z - y) for x, z, y in pairs if z > y]))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000, help="per server and body")
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--upstream-sessions", type=int, default=4, help="0: skip that part")
    parser.add_argument("--upstream-rounds", type=int, default=25, help="per session")
    parser.add_argument("--upstream-ms", type=float, default=20.0)
    parser.add_argument("--upstream-block", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    receiver = Receiver()
    on_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }
    off_env = {"OTEL_SDK_DISABLED": "true"}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("off", "memory", "on"):
            (Path(tmp) / name).mkdir()
        with (
            _baseline_server() as bare,
            running_server(Path(tmp) / "off", CONFIG, env=off_env) as off,
            running_server(Path(tmp) / "memory", CONFIG) as memory,
            running_server(Path(tmp) / "on", CONFIG, env=on_env) as on,
        ):
            servers = {
                "bare": (bare, None),
                "off": (off.port, off.proc.pid),
                "memory": (memory.port, memory.proc.pid),
                "on": (on.port, on.proc.pid),
            }
            json_runs = _alternate(servers, JSON_BODY, args.requests, args.block)
            del servers["bare"]  # it answers JSON only
            stream_runs = _alternate(servers, STREAM_BODY, args.requests // 2, args.block)
        upstream: dict[str, list[list[float]]] = {}  # label -> each session's round ratios
        if args.upstream_sessions > 0:
            with mock_upstream(args.upstream_ms, 16, 1.0) as url:
                for session in range(args.upstream_sessions):
                    for label, ratios in _upstream_session(url, Path(tmp), session, args, on_env):
                        upstream.setdefault(label, []).append(ratios)
    received = receiver.stop()

    def p50(values: list[float]) -> float:
        return statistics.median(values)

    def p99(values: list[float]) -> float:
        return _percentile(values, 0.99)

    bare_ms = json_runs.latencies["bare"]
    print(f"\n{args.requests} requests per server, blocks of {args.block}; receiver got {received}")
    print(f"  bare ASGI baseline (JSON)  p50 {p50(bare_ms):.3f} ms   p99 {p99(bare_ms):.3f} ms")
    for runs, n, label in (
        (json_runs, args.requests, "JSON, 1 token"),
        (stream_runs, args.requests // 2, "SSE, 16 tokens"),
    ):
        off_ms, on_ms = runs.latencies["off"], runs.latencies["on"]
        print(f"\n  {label}:")
        for mode, key in (("tracing off", "off"), ("in memory", "memory"), ("tracing on", "on")):
            values = runs.latencies[key]
            cpu_us = runs.cpu_s[key] / n * 1e6
            print(
                f"    {mode:<12} p50 {p50(values):.3f} ms   p99 {p99(values):.3f} ms   "
                f"gateway CPU {cpu_us:.0f} us/request"
            )
        print(
            f"    on/off: p50 latency x{runs.paired_ratio('on', 'off'):.3f} (median of "
            f"back-to-back blocks), p99 x{p99(on_ms) / p99(off_ms):.3f}, "
            f"CPU x{runs.cpu_s['on'] / runs.cpu_s['off']:.3f}"
        )
        if runs is json_runs:
            bare50 = p50(bare_ms)
            added_off, added_on = p50(off_ms) - bare50, p50(on_ms) - bare50
            print(
                f"    added over bare ASGI (p50): off {added_off:.3f} ms, on {added_on:.3f} ms"
                f" (x{added_on / added_off:.3f})"
            )
    for label, sessions in upstream.items():
        pooled = [r for ratios in sessions for r in ratios]
        each = ", ".join(f"x{statistics.median(ratios):.3f}" for ratios in sessions)
        print(
            f"\n  upstream {args.upstream_ms:g} ms, {label}: added latency on/off "
            f"x{statistics.median(pooled):.3f} (median of {len(pooled)} rounds in "
            f"{len(sessions)} sessions; per session {each})"
        )


if __name__ == "__main__":
    main()
