"""How much of the ledger a SIGKILL loses, measured under load (issue #16 point 8b).

A real gateway serves a steady load from concurrent clients; it is killed with SIGKILL
mid-load; the responses the clients saw (request id, when the answer arrived) are then
compared with the ledger's rows. A lost record's *age* is how long before the kill its
client had its answer. ``docs/shared-state.md`` states the window as measured by

    .venv/bin/python -m tests.integration.test_sigkill_window [runs] [concurrency ...]

which prints, per run, the requests answered, the records lost and the oldest lost
record's age; the test asserts a bound with room for a busy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from msgspec import Struct

from tests.support.server import running_server

CONFIG = {
    "backends": [
        {"id": "det", "type": "deterministic", "knowledge_cutoff": "unknown", "model": "det"}
    ]
}
BODY = {"model": "det", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


class Loss(Struct, kw_only=True):
    answered: int  # 200s the clients saw before the kill
    records: int  # rows in the ledger after it
    lost: int  # answered, but not in the ledger
    oldest_lost_s: float  # age at the kill of the oldest lost answer (0: none lost)
    newest_kept_s: float  # age at the kill of the newest answer that was kept


async def measure(tmp: Path, concurrency: int = 16, load_s: float = 2.0) -> Loss:
    answered: dict[str, float] = {}  # request id -> when its answer arrived (time.time)
    with running_server(tmp, CONFIG) as server:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

            async def worker() -> None:
                with contextlib.suppress(httpx.HTTPError):
                    while True:
                        resp = await client.post("/v1/chat/completions", json=BODY)
                        if resp.status_code == 200:
                            answered[resp.headers["x-request-id"]] = time.time()

            workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
            await asyncio.sleep(load_s)
            killed_at = time.time()
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=30)
            seen = dict(answered)  # nothing that arrives after the kill counts
            await asyncio.gather(*workers, return_exceptions=True)
    with sqlite3.connect(tmp / "data" / "ledger.sqlite3") as conn:
        kept = {row[0] for row in conn.execute("SELECT request_id FROM usage")}
    lost = [killed_at - at for rid, at in seen.items() if rid not in kept]
    survived = [killed_at - at for rid, at in seen.items() if rid in kept]
    return Loss(
        answered=len(seen),
        records=len(kept),
        lost=len(lost),
        oldest_lost_s=max(lost, default=0.0),
        newest_kept_s=min(survived, default=0.0),
    )


@pytest.mark.asyncio
async def test_sigkill_under_load_loses_only_the_last_moments(tmp_path: Path) -> None:
    loss = await measure(tmp_path)
    assert loss.answered > 50, loss
    # Measured: the oldest lost record is at most ~0.1 s old (docs/shared-state.md); the
    # bound here leaves room for a busy machine, where the writer waits for the CPU.
    assert loss.oldest_lost_s < 0.5, loss
    assert loss.records >= loss.answered - loss.lost


def main(runs: int, concurrencies: list[int]) -> None:
    for concurrency in concurrencies:
        losses = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                losses.append(asyncio.run(measure(Path(tmp), concurrency, load_s=1.0)))
        ages = sorted(loss.oldest_lost_s * 1000 for loss in losses)
        answered = statistics.median(loss.answered for loss in losses)
        print(
            f"c={concurrency}: {runs} runs, median {answered:.0f} answered a run; records lost "
            f"a run: median {statistics.median(x.lost for x in losses)}, max "
            f"{max(x.lost for x in losses)}; oldest lost record: median "
            f"{statistics.median(ages):.1f} ms, p90 {ages[int(0.9 * (runs - 1))]:.1f} ms, "
            f"max {ages[-1]:.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 10,
        [int(c) for c in sys.argv[2:]] or [1, 4, 16],
    )
