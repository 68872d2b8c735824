"""Router decision time with 8, 64 and 512 deployments, as p50/p99 microseconds.

Uses the real router (gateway.flow.decision.decide) and the real cost model of freshet-energy
(quotes from hardware profiles, prices, load), over a synthetic fleet of GPU, CPU and
ASIC deployments with mixed knowledge cutoffs, contexts and loads. Target (issue 5):
p99 under 100 us at 64 deployments. The cost of a JSON request parse is printed beside
it as a baseline measured in the same run.

Run:  .venv/bin/python benchmarks/router.py [--iterations 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import time
from typing import Any

from freshet_energy import model_meter
from freshet_energy.model import EnergyCostModel

from gateway.backend import BackendConfig, BackendStatus, Deployment, HardwareProfile
from gateway.builtins.routers import CheapestFresh
from gateway.cost import BackendCost, RequestShape
from gateway.flow.decision import decide
from gateway.routing import Need
from gateway.state.health import LocalHealth

KINDS = {
    "gpu": HardwareProfile(
        kind="gpu",
        watts_idle=100,
        watts_active=450,
        capex_per_hour=2.0,
        prefill_tokens_per_s=20000,
        decode_tokens_per_s=160,
        max_concurrency=128,
        power_curve=((1, 300), (128, 600)),
    ),
    "cpu": HardwareProfile(
        kind="cpu",
        watts_idle=1,
        watts_active=6,
        capex_per_hour=0.08,
        prefill_tokens_per_s=325,
        decode_tokens_per_s=125,
    ),
    "asic": HardwareProfile(
        kind="asic",
        watts_idle=130,
        watts_active=250,
        capex_per_hour=0.45,
        prefill_tokens_per_s=100000,
        decode_tokens_per_s=16000,
    ),
}
CUTOFFS = [dt.date(2023, 12, 1), dt.date(2024, 6, 1), dt.date(2025, 1, 1)]


class FakeBackend:
    def __init__(self, backend_id: str, profile: HardwareProfile) -> None:
        self.id = backend_id
        self.kind = profile.kind
        self.profile = profile


def fleet(
    n: int, rng: random.Random
) -> tuple[list[Deployment], dict[str, BackendCost], dict[str, BackendStatus]]:
    model = EnergyCostModel({}, {"model": model_meter})
    deployments, costs, statuses = [], {}, {}
    for i in range(n):
        kind = rng.choice(list(KINDS))
        backend_id = f"{kind}-{i}"
        config = BackendConfig(
            id=backend_id, type="x", energy={"meter": "model"} if kind != "asic" else {}
        )
        backend: Any = FakeBackend(backend_id, KINDS[kind])
        costs[backend_id] = model.for_backend(backend, config)
        deployments.append(
            Deployment(
                backend_id=backend_id,
                model="m",
                knowledge_cutoff=rng.choice(CUTOFFS),
                max_context=rng.choice([2048, 8192, 131072]),
            )
        )
        statuses[backend_id] = BackendStatus(
            healthy=rng.random() > 0.05, running=rng.randint(0, 64), saturated=rng.random() < 0.05
        )
    return deployments, costs, statuses


def measure(n: int, iterations: int) -> list[float]:
    rng = random.Random(n)
    deployments, costs, statuses = fleet(n, rng)
    router = CheapestFresh()
    health = LocalHealth()
    needs = [Need(min_cutoff=None, source="none"), Need(min_cutoff=CUTOFFS[1], source="body")]
    shapes = [
        RequestShape(prompt_tokens=p, output_tokens=o)
        for p, o in ((50, 200), (1500, 500), (4000, 100))
    ]
    samples = []
    for i in range(iterations):
        need, shape = needs[i % 2], shapes[i % 3]
        started = time.perf_counter_ns()
        decide(
            "g",
            deployments,
            shape,
            need,
            statuses,
            costs,
            health.unavailable(),
            router,
            "cheapest-fresh",
            "full",
            None,
            None,
        )
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def baseline(iterations: int) -> list[float]:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello " * 50}]})
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        json.loads(body)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per fleet size")
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, "
        f"{args.rounds} rounds of {args.iterations} decisions each"
    )
    base = baseline(args.iterations)
    print(
        f"{'baseline: json.loads of a chat body':<40} p50 {statistics.median(base):7.1f} us"
        f"   p99 {pct(base, 0.99):7.1f} us"
    )
    for n in (8, 64, 512):
        iterations = args.iterations if n < 512 else max(1000, args.iterations // 8)
        rounds = [measure(n, iterations) for _ in range(args.rounds)]
        s = [x for r in rounds for x in r]
        p99s = sorted(pct(r, 0.99) for r in rounds)
        print(
            f"{f'router, {n} deployments':<40} p50 {statistics.median(s):7.1f} us"
            f"   p99 {pct(s, 0.99):7.1f} us   ({statistics.median(s) / n:.2f} us/deployment;"
            f" p99 by round {p99s[0]:.1f}-{p99s[-1]:.1f})"
        )


if __name__ == "__main__":
    main()
