"""What auth and per-key limits cost a request, without HTTP around them.

In-process (the embedded default): authenticating a bearer key (SHA-256 + a dict lookup
in the key snapshot) and admitting + settling a request against rpm, tpm and a $ budget.
With ``--redis URL``: the same admission and settlement as Lua scripts on that Redis
(one round trip to admit; settlement runs off the request path).

Run:  .venv/bin/python benchmarks/limits.py [--n 100000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cost import Costing
from gateway.state.keys import ApiKey, digest, new_key
from gateway.state.limits import LocalLimits


def _us(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return f"p50 {statistics.median(ordered) * 1e6:.2f} us   p99 {p99 * 1e6:.2f} us"


def in_process(n: int) -> None:
    secret, key = new_key("bench", rpm=10**9, tpm=10**12, budget_usd=1e12)
    snapshot = {key.digest: key}
    limits = LocalLimits(60)
    costing = Costing(joules=0.1, energy_source="model", usd_list=1e-5)
    auth, admit = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        found = snapshot.get(digest(secret))
        t1 = time.perf_counter()
        assert found is not None
        r = limits.admit(found, 40, 1e-5, 0.1)
        limits.settle(r, costing.usd_total, costing.joules or 0.0, 40)
        t2 = time.perf_counter()
        auth.append(t1 - t0)
        admit.append(t2 - t1)
    print(f"in-process, {n} requests")
    print(f"  auth (sha256 + lookup)     {_us(auth)}")
    print(f"  admit + settle             {_us(admit)}")


async def redis(url: str, n: int) -> None:
    from gateway.settings import RedisSettings
    from gateway.state.limits_redis import RedisLimits
    from gateway.state.redis import RedisStore

    store = RedisStore(RedisSettings(url=url, prefix="freshet-bench"))
    await store.start()
    limits = RedisLimits(store, 60)
    key = ApiKey(name="bench", digest="d", created=0, rpm=10**9, tpm=10**12, budget_usd=1e12)
    admit = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await limits.admit(key, 40, 1e-5, 0.1)
        admit.append(time.perf_counter() - t0)
        limits.settle(r, 1e-5, 0.1, 40)
    await limits.aclose()
    await store.aclose()
    print(f"redis ({url}), {n} requests")
    print(f"  admit (one Lua round trip) {_us(admit)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--redis", default=None, help="Also measure on this Redis.")
    args = parser.parse_args()
    in_process(args.n)
    if args.redis:
        asyncio.run(redis(args.redis, min(args.n, 20_000)))


if __name__ == "__main__":
    main()
