"""Load for the peer benchmark: wrk for throughput and latency, an asyncio client for
streams (time to first token), and /proc readings of a process tree (RSS, CPU seconds).

Every load is bounded in time (wrk's ``-d``) or in count (the stream clients), and goes
to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
from msgspec import Struct

_LUA = """
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests":%d,"duration_us":%d,"connect":%d,'
    .. '"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"mean_us":%.1f,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def _lua_string(text: str) -> str:
    # JSON's string escapes are Lua's too, for the ASCII these scripts carry.
    return json.dumps(text, ensure_ascii=False)


class WrkResult(Struct, kw_only=True):
    connections: int
    requests: int
    duration_s: float
    rps: float
    errors: int
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    cpu_s: float | None = None  # CPU seconds the peer's processes used during the run


def wrk_available() -> str | None:
    return None if shutil.which("wrk") else "wrk is not installed (scripts/install-bench-peers.sh)"


def run_wrk(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    connections: int,
    duration_s: float,
    pids: Sequence[int] = (),
) -> WrkResult:
    """``connections`` keep-alive connections for ``duration_s``, one wrk thread."""
    header_lines = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
    )
    script = _LUA.format(body=_lua_string(body.decode()), headers=header_lines)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    cpu_before = tree_cpu_s(pids)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{duration_s:g}s",
                "--timeout",
                "10s",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration_s + 30,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    cpu = tree_cpu_s(pids) - cpu_before if pids else None
    match = re.search(r"^WRKJSON (.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"no result from wrk:\n{out}")
    d = json.loads(match.group(1))
    duration = d["duration_us"] / 1e6
    socket_errors = d["connect"] + d["read"] + d["write"] + d["timeout"]
    return WrkResult(
        connections=connections,
        requests=d["requests"],
        duration_s=duration,
        rps=d["requests"] / duration,
        errors=socket_errors + d["status"],
        non_2xx=d["status"],
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        mean_ms=d["mean_us"] / 1000,
        max_ms=d["max_us"] / 1000,
        cpu_s=cpu,
    )


class StreamResult(Struct, kw_only=True):
    streams: int
    errors: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    duration_p50_ms: float  # request sent to the stream's end
    chunks_p50: float  # content-bearing reads per stream (buffering merges them)
    tokens: int = 0
    wall_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


# A content delta that is not empty: chat (`"content":"x`) or completions (`"text":"x`).
# A piece of text: chat's content, a completion's or Anthropic's text, a Responses delta.
_CONTENT = re.compile(rb'"(?:content|text|delta)":\s*"[^"]')
_USAGE = re.compile(rb'"(?:completion|output)_tokens":\s*(\d+)')


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
) -> tuple[float, float, int, int]:
    """(ttft s, duration s, content reads, completion tokens from the usage chunk)."""
    started = time.perf_counter()
    ttft = None
    reads = 0
    tokens = 0
    tail = b""
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
        async for data in resp.content.iter_any():
            now = time.perf_counter()
            window = tail + data  # a match may straddle two reads
            if _CONTENT.search(window):
                reads += 1
                if ttft is None:
                    ttft = now - started
            usage = _USAGE.search(window)
            if usage:
                tokens = int(usage.group(1))
            tail = data[-64:]
    duration = time.perf_counter() - started
    return (ttft if ttft is not None else duration), duration, reads, tokens


async def _streams(
    url: str, body: bytes, headers: Mapping[str, str], count: int, concurrency: int, warm: bool
) -> StreamResult:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    all_headers = {"content-type": "application/json", **headers}
    results: list[tuple[float, float, int, int]] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warm:  # one untimed stream first: connections and the peer's lazy paths warm up
            await _one_stream(session, url, body, all_headers)
        todo = iter(range(count))
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal errors
            for _ in todo:
                try:
                    results.append(await _one_stream(session, url, body, all_headers))
                except (aiohttp.ClientError, RuntimeError, TimeoutError):
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ttfts = [r[0] * 1000 for r in results]
    return StreamResult(
        streams=len(results),
        errors=errors,
        ttft_p50_ms=percentile(ttfts, 0.5),
        ttft_p99_ms=percentile(ttfts, 0.99),
        duration_p50_ms=percentile([r[1] * 1000 for r in results], 0.5),
        chunks_p50=percentile([float(r[2]) for r in results], 0.5),
        tokens=sum(r[3] for r in results),
        wall_s=wall,
    )


def run_streams(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    count: int,
    concurrency: int = 1,
    warm: bool = True,
) -> StreamResult:
    return asyncio.run(_streams(url, body, headers, count, concurrency, warm))


# -- /proc readings of a process and its descendants ------------------------------------


def tree(pids: Sequence[int]) -> list[int]:
    out: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                continue
    return out


def tree_rss_mb(pids: Sequence[int]) -> float:
    total_kb = 0
    for pid in tree(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def tree_cpu_s(pids: Sequence[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def wait_http(url: str, timeout_s: float, ok: Sequence[int] = (200,)) -> None:
    """Until ``url`` answers (any of ``ok``) or ``timeout_s`` passes."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status in ok:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready in {timeout_s:.0f} s ({last})")
