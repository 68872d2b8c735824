"""Freshet against LiteLLM, Portkey and nginx, in one run, on this machine.

One mock OpenAI upstream (benchmarks/mock_upstream.py, 20 ms) serves every peer in turn:
direct (no gateway), nginx proxy_pass, LiteLLM proxy, Portkey's gateway and Freshet
(``freshet serve`` with an ``openai-compatible`` backend pointing at the mock), with the
same load for each: wrk at c=1 (latency), c=32 and c=256 (throughput), and an asyncio
client for streams (time to first token). Then Freshet alone: a simulated ASIC stream
(16,000 tok/s, 1,000 tokens) and 64 of them at once, the CPU model through Freshet
against llama-cpp-python, a memory soak, and a py-spy profile under c=32.

Writes benchmarks/results/peers.{json,md,svg}. Peers that are not installed
(scripts/install-bench-peers.sh) get a row that says so. Only 127.0.0.1 is reached;
every load is bounded; every process started is stopped.

Run:  .venv/bin/python benchmarks/peers.py [--duration 8] [--peers direct,nginx,...]
      [--embeddings-peers direct,freshet] [--responses-peers freshet]
      [--messages-peers freshet]
      [--skip-asic] [--skip-cpu] [--soak-s 60] [--no-profile]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import peer_extras as extras  # noqa: E402
from benchmarks import peer_procs  # noqa: E402
from benchmarks.loadgen import (  # noqa: E402
    run_streams,
    run_wrk,
    tree_rss_mb,
    wait_http,
    wrk_available,
)
from benchmarks.peer_procs import MODEL, PEERS, Peer, python_version  # noqa: E402
from benchmarks.peer_report import (  # noqa: E402
    EMBEDDINGS_SUFFIX,
    PeerResult,
    Results,
    Target,
    added,
    chart,
    markdown,
)
from tests.support.server import free_port  # noqa: E402

BODY = b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":1}' % MODEL.encode()
STREAM_BODY = (
    b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":64,'
    b'"stream":true,"stream_options":{"include_usage":true}}' % MODEL.encode()
)
EMBED_BODY = (
    b'{"model":"%s","input":["the river rises after rain","a mountain stands over the valley"],'
    b'"encoding_format":"base64"}' % MODEL.encode()  # what the openai SDK sends by default
)
# The responses rows: POST /v1/responses, which Freshet serves as a chat request upstream
# (the mock speaks chat only), so "Added" is against direct's chat row: the cost of the
# Responses API's translation, events and store on top of the gateway's.
RESPONSES_BODY = b'{"model":"%s","input":"hi","max_output_tokens":1}' % MODEL.encode()
RESPONSES_STREAM_BODY = (
    b'{"model":"%s","input":"hi","max_output_tokens":64,"stream":true}' % MODEL.encode()
)
RESPONSES_SUFFIX = "-responses"  # the name of a peer's POST /v1/responses row
# The messages rows: Anthropic's POST /v1/messages, also served as a chat request upstream.
MESSAGES_BODY = (
    b'{"model":"%s","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}' % MODEL.encode()
)
MESSAGES_STREAM_BODY = (
    b'{"model":"%s","max_tokens":64,"stream":true,'
    b'"messages":[{"role":"user","content":"hi"}]}' % MODEL.encode()
)
MESSAGES_SUFFIX = "-messages"  # the name of a peer's POST /v1/messages row
DEFAULT_PEERS = "direct,nginx,litellm,portkey,python-floor,freshet,freshet-granian,freshet-w2"
# The embeddings rows: POST /v1/embeddings, no streams; "Added" against direct's own row.
DEFAULT_EMBEDDINGS_PEERS = "direct,freshet"
DEFAULT_RESPONSES_PEERS = "freshet"
DEFAULT_MESSAGES_PEERS = "freshet"


class Route(NamedTuple):
    """What one row measures: the path, the body, the streamed body (None: no streams)."""

    suffix: str
    path: str
    body: bytes
    stream_body: bytes | None


CHAT = Route("", "/v1/chat/completions", BODY, STREAM_BODY)
EMBEDDINGS = Route(EMBEDDINGS_SUFFIX, "/v1/embeddings", EMBED_BODY, None)
RESPONSES = Route(RESPONSES_SUFFIX, "/v1/responses", RESPONSES_BODY, RESPONSES_STREAM_BODY)
MESSAGES = Route(MESSAGES_SUFFIX, "/v1/messages", MESSAGES_BODY, MESSAGES_STREAM_BODY)


@contextmanager
def mock_upstream(delay_ms: float, chunks: int, interval_ms: float) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, str(ROOT / "benchmarks" / "mock_upstream.py"), "--port", str(port)]
    args += ["--delay-ms", str(delay_ms), "--chunks", str(chunks)]
    args += ["--interval-ms", str(interval_ms)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/v1/models", 15)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure(peer: Peer, upstream: str, args: argparse.Namespace, route: Route = CHAT) -> PeerResult:
    """One row: chat completions (with streams), POST /v1/embeddings or /v1/responses."""
    path, body = route.path, route.body
    result = PeerResult(
        name=f"{peer.name}{route.suffix}",
        label=f"{peer.label}: {route.path}" if route.suffix else peer.label,
    )
    reason = peer.unavailable()
    if reason is not None:
        result.skipped = reason
        return result
    result.version = peer.version()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp, peer.start(upstream, Path(tmp)) as running:
            result.startup_s = time.perf_counter() - started
            url = running.url + path
            headers = {"Content-Type": "application/json", **running.headers}
            pids = running.pids
            run_wrk(url, body, headers, 8, 2)  # warm-up: pools, caches, lazy imports
            time.sleep(1)
            result.rss_rest_mb = tree_rss_mb(pids) if pids else None
            for name, connections in (("c1", 1), ("c32", 32), ("c256", 256)):
                _log(f"  {peer.name}: wrk -c{connections} {args.duration:g}s")
                wrk = run_wrk(url, body, headers, connections, args.duration, pids)
                setattr(result, name, wrk)
                _log(f"    {wrk.rps:,.0f} req/s, p50 {wrk.p50_ms:.2f} ms, {wrk.errors} errors")
            if route.stream_body is not None:  # embeddings are not streamed
                _log(f"  {peer.name}: {args.streams} streams")
                try:
                    result.stream = run_streams(
                        url, route.stream_body, running.headers, args.streams
                    )
                    _log(f"    TTFT p50 {result.stream.ttft_p50_ms:.2f} ms")
                except RuntimeError as exc:  # the peer answered a stream with an error
                    result.stream_error = str(exc)[:200]
                    _log(f"    streaming failed: {result.stream_error}")
            time.sleep(1)
            result.rss_after_mb = tree_rss_mb(pids) if pids else None
    except Exception as exc:  # noqa: BLE001 -- a peer that fails gets a row saying why
        traceback.print_exc()
        result.skipped = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return result


def machine() -> dict[str, object]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    os_name = platform.platform(terse=True)
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_kb / 1024 / 1024,
        "os": os_name,
        "kernel": platform.release(),
        "python": python_version(),
        "wrk": (wrk.stdout + wrk.stderr).split()[1] if wrk.stdout + wrk.stderr else "?",
        "load_start": _load(),
    }


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def targets(r: Results) -> list[Target]:
    """Issue 9's targets, for the plain ``freshet serve`` row."""
    peers = {p.name: p for p in r.peers if not p.skipped}
    out: list[Target] = []
    fr, direct = peers.get("freshet"), peers.get("direct")
    if fr is not None and direct is not None:
        a = added(fr, direct)
        p50, p99, x32 = a["p50"], a["p99"], a["x32"]
        if p50 is not None and p99 is not None:
            out.append(
                Target(
                    what="added p50 at c=1",
                    target="≤ 0.5 ms",
                    measured=f"{p50:.2f} ms",
                    met=p50 <= 0.5,
                )
            )
            out.append(
                Target(
                    what="added p99 at c=1",
                    target="≤ 3 ms",
                    measured=f"{p99:.2f} ms",
                    met=p99 <= 3.0,
                )
            )
        if x32 is not None and fr.c32 is not None:
            out.append(
                Target(
                    what="req/s at c=32",
                    target="≥ 0.8 x direct, no errors",
                    measured=f"{x32:.2f} x direct, {fr.c32.errors} errors",
                    met=x32 >= 0.8 and fr.c32.errors == 0,
                )
            )
        if fr.c256 is not None and fr.c32 is not None:
            kept = fr.c256.rps / fr.c32.rps
            out.append(
                Target(
                    what="c=256",
                    target="no errors, no collapse (≥ 0.9 x its c=32)",
                    measured=f"{fr.c256.errors} errors, {kept:.2f} x its c=32 req/s",
                    met=fr.c256.errors == 0 and kept >= 0.9,
                )
            )
        if a["ttft"] is not None and fr.stream and direct.stream:
            reads = fr.stream.chunks_p50 / max(direct.stream.chunks_p50, 1)
            out.append(
                Target(
                    what="added TTFT p50, streaming",
                    target="≤ 1 ms",
                    measured=f"{a['ttft']:.2f} ms",
                    met=a["ttft"] <= 1.0,
                )
            )
            out.append(
                Target(
                    what="chunks forwarded as they arrive",
                    target="as many reads as direct (no buffering)",
                    measured=f"{fr.stream.chunks_p50:.0f} vs {direct.stream.chunks_p50:.0f}",
                    met=reads >= 0.8,
                )
            )
        blocked = [v.rss_mb for v in r.rss if v.config.startswith("plugins.block")]
        if fr.rss_rest_mb is not None:
            out.append(
                Target(
                    what="RSS at rest, no local model",
                    target="≤ 80 MB",
                    measured=f"{fr.rss_rest_mb:.0f} MB"
                    + (f" ({blocked[0]:.0f} MB, local-model plugins blocked)" if blocked else ""),
                    met=fr.rss_rest_mb <= 80,
                )
            )
    if r.asic is not None:
        out.append(
            Target(
                what="one ASIC stream, client tok/s",
                target="≥ 95 % of 16,000",
                measured=f"{r.asic.one_stream_tokens_per_s:,.0f} ({r.asic.one_stream_ratio:.1%})",
                met=r.asic.one_stream_ratio >= 0.95,
            )
        )
        out.append(
            Target(
                what="64 ASIC streams, aggregate",
                target="report it and the ceiling",
                measured=f"{r.asic.aggregate_tokens_per_s:,.0f} tok/s",
                met=r.asic.aggregate_errors == 0,
            )
        )
    if r.soak is not None:
        out.append(
            Target(
                what=f"RSS growth, {r.soak.seconds:.0f} s at {r.soak.rate:.0f} req/s",
                target="≤ 5 % (over 10 min)",
                measured=f"{r.soak.growth:+.1%}",
                met=r.soak.growth <= 0.05 and r.soak.errors == 0,
            )
        )
    if r.cpu is not None:
        out.append(
            Target(
                what="CPU backend through Freshet",
                target="≥ 95 % of direct",
                measured=f"{r.cpu.ratio:.1%}",
                met=r.cpu.ratio >= 0.95,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peers", default=DEFAULT_PEERS, help=f"default: {DEFAULT_PEERS}; none: only the rest"
    )
    parser.add_argument(
        "--embeddings-peers",
        default=DEFAULT_EMBEDDINGS_PEERS,
        help=f"rows for POST /v1/embeddings; default: {DEFAULT_EMBEDDINGS_PEERS}; none: skip",
    )
    parser.add_argument(
        "--responses-peers",
        default=DEFAULT_RESPONSES_PEERS,
        help=f"rows for POST /v1/responses; default: {DEFAULT_RESPONSES_PEERS}; none: skip",
    )
    parser.add_argument(
        "--messages-peers",
        default=DEFAULT_MESSAGES_PEERS,
        help=f"rows for POST /v1/messages; default: {DEFAULT_MESSAGES_PEERS}; none: skip",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk load")
    parser.add_argument("--streams", type=int, default=100, help="sequential streams per peer")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    parser.add_argument("--skip-asic", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--soak-s", type=float, default=60.0, help="0 skips the soak")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if not [n for n in args.embeddings_peers.split(",") if n not in ("", "none")]:
        peer_procs.FRESHET_OPERATIONS = None
    missing = wrk_available()
    if missing:
        sys.exit(f"peers.py: {missing}")
    started = time.time()
    results = Results(
        started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=0.0,
        machine=machine(),
        settings={
            "delay_ms": args.delay_ms,
            "chunks": args.chunks,
            "interval_ms": args.interval_ms,
            "duration_s": args.duration,
            "streams": args.streams,
            "body": BODY.decode(),
            "stream_body": STREAM_BODY.decode(),
            "embeddings_body": EMBED_BODY.decode(),
            "responses_body": RESPONSES_BODY.decode(),
            "responses_stream_body": RESPONSES_STREAM_BODY.decode(),
            "messages_body": MESSAGES_BODY.decode(),
            "messages_stream_body": MESSAGES_STREAM_BODY.decode(),
        },
        peers=[],
    )
    with mock_upstream(args.delay_ms, args.chunks, args.interval_ms) as upstream:
        for name in [n for n in args.peers.split(",") if n not in ("", "none")]:
            _log(f"{name} ...")
            results.peers.append(measure(PEERS[name], upstream, args))
        for name in [n for n in args.embeddings_peers.split(",") if n not in ("", "none")]:
            _log(f"{name}, /v1/embeddings ...")
            results.peers.append(measure(PEERS[name], upstream, args, EMBEDDINGS))
        for name in [n for n in args.responses_peers.split(",") if n not in ("", "none")]:
            _log(f"{name}, /v1/responses ...")
            results.peers.append(measure(PEERS[name], upstream, args, RESPONSES))
        for name in [n for n in args.messages_peers.split(",") if n not in ("", "none")]:
            _log(f"{name}, /v1/messages ...")
            results.peers.append(measure(PEERS[name], upstream, args, MESSAGES))
        _log("rss by configuration ...")
        results.rss = extras.rss_variants(upstream)
        if args.soak_s > 0:
            _log(f"soak {args.soak_s:g} s ...")
            results.soak = extras.soak(upstream, args.soak_s)
        if not args.no_profile:
            _log("profile ...")
            results.profile = extras.profile(upstream, args.out)
    if not args.skip_asic:
        _log("asic ...")
        results.asic = extras.asic()
    if not args.skip_cpu:
        _log("cpu model ...")
        results.cpu = extras.cpu_model(requests=8)
    results.machine["load_end"] = _load()
    results.seconds = time.time() - started
    results.targets = targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_bytes(msgspec.json.format(msgspec.json.encode(results)) + b"\n")
    (args.out / "peers.md").write_text(markdown(results))
    (args.out / "peers.svg").write_text(chart(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
