"""The ledger under signals: SIGTERM loses nothing, SIGKILL at most the flush window."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from gateway.ledger.sqlite import FLUSH_INTERVAL_S
from tests.support.server import running_server

CONFIG = {
    "backends": [
        {
            "id": "det",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "det",
            "tokens_per_s": 100,
        },
    ],
}


def _records(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "ledger.sqlite3") as conn:
        return dict(conn.execute("SELECT request_id, status FROM usage").fetchall())


async def _until_running(client: httpx.AsyncClient, count: int) -> None:
    """Until the backend generates ``count`` requests at once (the load is in flight)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        views = (await client.get("/freshet/backends")).json()
        if next(v for v in views if v["id"] == "det")["running"] >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} requests were not in flight together within 30 s")


@pytest.mark.asyncio
async def test_sigterm_during_load_loses_no_record(tmp_path: Path) -> None:
    # 3 s of generation each: all 30 are in flight together, even on a busy machine.
    body = {"model": "det", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 300}
    with running_server(tmp_path, CONFIG) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            tasks = [
                asyncio.create_task(
                    client.post("/v1/chat/completions", json={**body, "stream": i % 2 == 0})
                )
                for i in range(30)
            ]
            await _until_running(client, 30)
            server.proc.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*tasks, return_exceptions=True)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert server.proc.wait(timeout=20) in (0, -signal.SIGTERM)
    served = [r for r in responses if isinstance(r, httpx.Response)]
    assert len(served) == 30, [r for r in responses if not isinstance(r, httpx.Response)]
    ids = {r.headers["x-request-id"] for r in served}
    records = _records(tmp_path / "data")
    assert ids <= set(records)
    assert len(records) == 30


@pytest.mark.asyncio
async def test_sigkill_loses_at_most_the_flush_window(tmp_path: Path) -> None:
    body = {"model": "det", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    done: list[tuple[str, float]] = []
    with running_server(tmp_path, CONFIG) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for _ in range(60):
                resp = await client.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200
                done.append((resp.headers["x-request-id"], time.monotonic()))
        killed_at = time.monotonic()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
    records = _records(tmp_path / "data")
    # Records are written in batches every FLUSH_INTERVAL_S; allow that plus the write
    # itself (a few ms, more on a loaded machine).
    window = FLUSH_INTERVAL_S + 0.25
    old_enough = [rid for rid, at in done if at < killed_at - window]
    missing = [rid for rid in old_enough if rid not in records]
    assert not missing, f"{len(missing)} records older than {window}s lost"
    assert len(records) >= len(old_enough)
