"""The measurements of the peer benchmark that only Freshet takes part in: simulated ASIC
streams, the CPU model against llama-cpp-python, a memory soak, and a py-spy profile of
the hot path under load."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from msgspec import Struct

from benchmarks.loadgen import percentile, run_streams, run_wrk, tree_cpu_s, tree_rss_mb
from benchmarks.peer_procs import MODEL, freshet_server

ROOT = Path(__file__).resolve().parents[1]

ASIC_RATE = 16_000.0
ASIC_PREFILL = 100_000.0
ASIC_TOKENS = 1_000


def asic_config(cards: int) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "asic",
                "type": "asic-sim",
                "knowledge_cutoff": "unknown",
                "model": "llama-3.1-8b",
                "decode_tokens_per_s": ASIC_RATE,
                "prefill_tokens_per_s": ASIC_PREFILL,
                "cards": cards,
                "queue_limit": 64,
            }
        ],
        "groups": {},
    }


ASIC_BODY = (
    b'{"model":"llama-3.1-8b","messages":[{"role":"user","content":"Tell me about rivers."}],'
    b'"max_tokens":%d,"stream":true,"stream_options":{"include_usage":true}}' % ASIC_TOKENS
)


class AsicResult(Struct, kw_only=True):
    simulated_tokens_per_s: float
    one_stream_tokens_per_s: float  # client-received, request sent to last byte (median)
    one_stream_ratio: float
    one_stream_ttft_ms: float
    streams: int
    aggregate_tokens_per_s: float
    aggregate_ideal_tokens_per_s: float
    aggregate_errors: int
    gateway_cpu_share: float  # of one core, during the concurrent streams
    ceiling: str


def asic(streams: int = 64, repeats: int = 10) -> AsicResult:
    """One stream of 1,000 tokens at 16,000 tok/s (median of ``repeats``), then
    ``streams`` of them at once on as many simulated cards."""
    with freshet_server(asic_config(streams)) as running:
        url = running.url + "/v1/chat/completions"
        one = run_streams(url, ASIC_BODY, {}, repeats)
        cpu0 = tree_cpu_s(running.pids)
        many = run_streams(url, ASIC_BODY, {}, streams, concurrency=streams, warm=False)
        cpu = tree_cpu_s(running.pids) - cpu0
    rate = ASIC_TOKENS / (one.duration_p50_ms / 1000)
    share = cpu / many.wall_s if many.wall_s else 0.0
    ideal = streams * ASIC_RATE
    if many.tokens_per_s >= 0.95 * ideal:
        ceiling = "none reached: the simulated cards are the limit"
    elif share >= 0.85:
        ceiling = f"the gateway process: {share:.0%} of a core while streaming"
    else:
        ceiling = f"the shared cores: gateway at {share:.0%} of a core, client and load beside it"
    return AsicResult(
        simulated_tokens_per_s=ASIC_RATE,
        one_stream_tokens_per_s=rate,
        one_stream_ratio=rate / ASIC_RATE,
        one_stream_ttft_ms=one.ttft_p50_ms,
        streams=streams,
        aggregate_tokens_per_s=many.tokens_per_s,
        aggregate_ideal_tokens_per_s=ideal,
        aggregate_errors=many.errors + (streams - many.streams),
        gateway_cpu_share=share,
        ceiling=ceiling,
    )


class CpuResult(Struct, kw_only=True):
    direct_tokens_per_s: float
    gateway_tokens_per_s: float
    ratio: float
    requests: int
    max_tokens: int


def cpu_model(requests: int = 5, max_tokens: int = 64) -> CpuResult:
    from benchmarks.overhead import model_path

    m = model_path(requests, max_tokens)
    return CpuResult(
        direct_tokens_per_s=m["direct_tokens_per_s"],
        gateway_tokens_per_s=m["gateway_tokens_per_s"],
        ratio=m["ratio_tokens_per_s"],
        requests=requests,
        max_tokens=max_tokens,
    )


class SoakResult(Struct, kw_only=True):
    seconds: float
    rate: float
    requests: int
    errors: int
    rss_start_mb: float
    rss_end_mb: float
    rss_max_mb: float
    growth: float  # (end - start) / start
    p50_ms: float
    p99_ms: float


def soak(upstream: str, seconds: float, rate: float = 200.0) -> SoakResult:
    """Freshet at a fixed ``rate`` of requests a second for ``seconds``: RSS over time."""
    from benchmarks.peer_procs import freshet_config

    with freshet_server(freshet_config(upstream)) as running:
        url = running.url + "/v1/chat/completions"
        run_wrk(url, BODY, HEADERS, 8, 2)  # warm up, as the peers are
        time.sleep(1)
        return asyncio.run(_soak(url, running.pids, seconds, rate))


BODY = b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":1}' % MODEL.encode()
HEADERS = {"content-type": "application/json"}


async def _soak(url: str, pids: list[int], seconds: float, rate: float) -> SoakResult:
    rss = [tree_rss_mb(pids)]
    latencies: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(64)
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            async with session.post(url, data=BODY, headers=HEADERS) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
                    return
        except (aiohttp.ClientError, TimeoutError):
            errors += 1
            return
        finally:
            sem.release()
        latencies.append((time.perf_counter() - started) * 1000)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        sent = 0
        next_sample = start + 10
        while (now := time.perf_counter()) - start < seconds:
            due = int((now - start) * rate)
            while sent < due:
                await sem.acquire()
                task = asyncio.create_task(one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if now >= next_sample:
                rss.append(tree_rss_mb(pids))
                next_sample += 10
            await asyncio.sleep(0.005)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    await asyncio.sleep(1)
    rss.append(tree_rss_mb(pids))
    # The first sample is before any soak traffic; growth counts from the first sample
    # taken under load, so warm-up allocations (pools, caches) are not counted as a leak.
    base = rss[1] if len(rss) > 2 else rss[0]
    return SoakResult(
        seconds=seconds,
        rate=rate,
        requests=len(latencies) + errors,
        errors=errors,
        rss_start_mb=base,
        rss_end_mb=rss[-1],
        rss_max_mb=max(rss),
        growth=(rss[-1] - base) / base,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
    )


class RssResult(Struct, kw_only=True):
    config: str
    rss_mb: float


def rss_variants(upstream: str) -> list[RssResult]:
    """RSS at rest (after a warm-up) of Freshet in front of the mock, as configured for the
    peers, and with the plugins of local models it does not use blocked in its config."""
    from benchmarks.peer_procs import freshet_config

    out = []
    for label, block in (
        ("as for the peers (every installed plugin loaded)", []),
        ("plugins.block: [llamacpp, asic-sim] (no local-model plugins)", ["llamacpp", "asic-sim"]),
    ):
        config = {**freshet_config(upstream), "plugins": {"block": block}}
        with freshet_server(config) as running:
            run_wrk(running.url + "/v1/chat/completions", BODY, HEADERS, 8, 2)
            time.sleep(1)
            out.append(RssResult(config=label, rss_mb=tree_rss_mb(running.pids)))
    return out


# -- profile -----------------------------------------------------------------------------

_PATH_IN_FRAME = re.compile(r"\((/[^():]*?)(?=:\d+\))")


def _short_path(path: str) -> str:
    """A frame's file without this machine's directories (no paths are committed)."""
    for marker in ("/site-packages/", "/lib/python3."):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3." else rest
    root = str(ROOT) + "/"
    return path.removeprefix(root) if path.startswith(root) else Path(path).name


def sanitize(text: str) -> str:
    text = _PATH_IN_FRAME.sub(lambda m: "(" + _short_path(m.group(1)), text)
    return text.replace(str(ROOT) + "/", "").replace(str(Path.home()), "~")


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


def profile(upstream: str, out_dir: Path, seconds: float = 10.0) -> dict[str, Any]:
    """py-spy on Freshet while wrk holds 32 connections on it: a flame graph (SVG) and
    the functions with the most samples (self and inclusive), as text."""
    spy = py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    from benchmarks.peer_procs import freshet_config

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, freshet_server(freshet_config(upstream)) as running:
        url = running.url + "/v1/chat/completions"
        run_wrk(url, BODY, HEADERS, 8, 2)
        pid = str(running.pids[0])
        raw = Path(tmp) / "profile.raw"
        svg = Path(tmp) / "profile.svg"
        common = ["--pid", pid, "--duration", f"{seconds:g}", "--rate", "200", "--nonblocking"]
        load = threading.Thread(
            target=run_wrk, args=(url, BODY, HEADERS, 32, seconds * 2 + 4), daemon=True
        )
        load.start()
        try:
            time.sleep(1)
            for fmt, out in (("raw", raw), ("flamegraph", svg)):
                subprocess.run(
                    [spy, "record", *common, "-f", fmt, "-o", str(out)],
                    check=True,
                    capture_output=True,
                    timeout=seconds + 30,
                )
        finally:
            load.join(timeout=seconds * 2 + 40)
        flame = sanitize(svg.read_text()).replace(str(svg), svg.name)
        (out_dir / "freshet-c32-flame.svg").write_text(flame)
        top = top_functions(sanitize(raw.read_text()))
        (out_dir / "freshet-c32-profile.txt").write_text(top)
    return {"flame": "freshet-c32-flame.svg", "top": "freshet-c32-profile.txt"}


def top_functions(raw: str, count: int = 30) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        total += n
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    lines = [f"py-spy, Freshet under wrk -c32: {total} samples", "", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(count)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(count * 2)]
    return "\n".join(lines) + "\n"


def _function(frame: str) -> str:
    # "name (path:line)" -> "name (path)": lines split one function into many rows.
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0]})" if where else name
