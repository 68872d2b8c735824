"""How fast `freshet replay` is, on one core: the figures issue 20 asks for.

1. The two Azure LLM inference traces 2023 together (28,185 requests) through a
   three-backend fleet (deploy/fleets/gpu-cpu-card.yaml: an H100 on vLLM, eight 2-vCPU
   machines on llama.cpp, an etched card). Target: under 10 s.
2. The same over a 24-month horizon (24 replays, the freshness needs moving with the
   simulated date). Target: under 2 minutes.
3. One million requests drawn from the two traces' distribution (prompt, output and class
   of a random row, the gap to the previous request from a random gap), through the same
   fleet, with the process's resident memory sampled as it goes. Target: under 5 minutes,
   memory flat.

Each figure is the whole command's work: reading the trace, routing, simulating, metering,
writing every usage record to the ledger (SQLite) and the reports. The process is pinned to
one CPU (its ledger thread too).

Run:  FRESHET_TRACE_DIR=<folder with the Azure CSVs> .venv/bin/python benchmarks/replay.py
      [--data-dir DIR] [--skip-million] [--json]
The Azure traces: https://github.com/Azure/AzurePublicDataset (CC BY 4.0; Patel et al.,
"Splitwise", ISCA 2024).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from gateway.plugins import Plugins
from gateway.replay.mix import parse_mixes
from gateway.replay.plan import Plan, Progress, replay
from gateway.replay.traces import TRACE_DIR_ENV
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "deploy" / "fleets" / "gpu-cpu-card.yaml"
MIXES = [
    "azure-code=20%:none,40%:730d..1460d,40%:365d..730d",
    "azure-conv=60%:none,30%:730d..1825d,10%:365d..730d",
]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class Sampler(Progress):
    """Resident memory every 100,000 requests."""

    def __init__(self) -> None:
        self.done = 0
        self.samples: list[tuple[int, float]] = []

    def advance(self, requests: int) -> None:
        before = self.done // 100_000
        self.done += requests
        if self.done // 100_000 > before:
            self.samples.append((self.done, rss_mb()))


def run(plan: Plan, progress: Progress | None = None) -> tuple[float, Any]:
    settings = load_settings(str(FLEET), env={})
    started = time.perf_counter()
    report = asyncio.run(replay(plan, [("fleet", settings)], Plugins(), progress))
    return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get(TRACE_DIR_ENV))
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit(f"the Azure traces: --data-dir DIR or ${TRACE_DIR_ENV}")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    base = dict(
        traces=["azure-code", "azure-conv"],
        data_dir=args.data_dir,
        mixes=parse_mixes(MIXES),
        start=dt.date(2026, 1, 1),
        max_ttft_ms=2000.0,
    )
    results: dict[str, Any] = {"cpu": _cpu(), "cores_used": 1}

    wall, report = run(Plan(**base))
    n = report.fleets[0].requests
    results["azure"] = {"requests": n, "wall_s": wall, "per_request_us": wall / n * 1e6}
    print(f"1. Azure code + conv, {n:,} requests, 3 backends: {wall:.2f} s (target < 10 s)")

    wall, report = run(Plan(**base, horizon=24))
    total = n * 24
    results["horizon"] = {"months": 24, "requests": total, "wall_s": wall}
    print(f"2. 24-month horizon, {total:,} requests: {wall:.1f} s (target < 120 s)")

    if not args.skip_million:
        sampler = Sampler()
        start_rss = rss_mb()
        wall, report = run(Plan(**base, synthesize=1_000_000), sampler)
        samples = sampler.samples
        growth = samples[-1][1] - samples[0][1] if samples else 0.0
        results["million"] = {
            "requests": report.fleets[0].requests,
            "wall_s": wall,
            "rss_mb_before": start_rss,
            "rss_mb": samples,
            "rss_growth_mb_after_100k": growth,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        print(
            f"3. 1,000,000 synthesised requests: {wall:.1f} s (target < 300 s); resident "
            f"memory {samples[0][1]:.0f} MB at 100k, {samples[-1][1]:.0f} MB at 1M "
            f"({growth:+.1f} MB)"
        )
    if args.json:
        print(json.dumps(results, indent=2))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
