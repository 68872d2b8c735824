"""Exactly one usage record per request that reached a backend, whatever happened to it,
and the cost each response reports is the cost its record holds."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import running_server

PROFILE = {
    "kind": "cpu",
    "watts_idle": 1.0,
    "watts_active": 6.0,
    "capex_per_hour": 0.08,
    "prefill_tokens_per_s": 325,
    "decode_tokens_per_s": 125,
}
CONFIG = {
    "backends": [
        {
            "id": "paced",
            "type": "deterministic",
            "model": "paced",
            "tokens_per_s": 400,
            "knowledge_cutoff": "2024-06-01",
            "profile": PROFILE,
        },
        {
            "id": "broken",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "broken",
            "tokens_per_s": 400,
            "fail_after_tokens": 3,
            "profile": PROFILE,
        },
        {
            "id": "asic",
            "type": "asic-sim",
            "knowledge_cutoff": "unknown",
            "model": "llama-3.1-8b",
            "time_scale": 0.05,
        },
    ],
    "groups": {"auto": ["asic", "paced"]},
    "prices": {"kwh_usd": 0.12, "pue": 1.5},
}


def _sse(text: str) -> list[dict[str, Any]]:
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


async def _one(client: httpx.AsyncClient, i: int) -> tuple[str, float | None, str]:
    """Send request number i; return its id, the cost the response reported, and a kind."""
    model = ["paced", "auto", "llama-3.1-8b"][i % 3]
    msg = {"messages": [{"role": "user", "content": f"request {i} about rivers"}]}
    if i % 5 == 4:  # legacy completions, not streamed
        resp = await client.post(
            "/v1/completions", json={"model": model, "prompt": f"p {i}", "max_tokens": 8}
        )
        assert resp.status_code == 200, resp.text
        return resp.headers["x-request-id"], resp.json()["usage"]["cost"], "completion"
    if i % 2 == 0:
        resp = await client.post(
            "/v1/chat/completions", json={"model": model, **msg, "max_tokens": 12}
        )
        assert resp.status_code == 200, resp.text
        assert float(resp.headers["x-freshet-cost-usd"]) == pytest.approx(
            resp.json()["usage"]["cost"], abs=1e-9
        )
        return resp.headers["x-request-id"], resp.json()["usage"]["cost"], "json"
    body = {
        "model": model,
        **msg,
        "max_tokens": 12,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resp = await client.post("/v1/chat/completions", json=body)
    usage = _sse(resp.text)[-1]["usage"]
    return resp.headers["x-request-id"], usage["cost"], "stream"


async def _killed_mid_stream(client: httpx.AsyncClient) -> str:
    body = {
        "model": "paced",
        "messages": [{"role": "user", "content": "long"}],
        "max_tokens": 400,
        "stream": True,
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        seen = 0
        async for line in resp.aiter_lines():
            seen += line.startswith("data: ")
            if seen >= 3:
                break
        return resp.headers["x-request-id"]


async def _failing_backend(client: httpx.AsyncClient) -> str:
    body = {
        "model": "broken",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 10,
        "stream": True,
    }
    resp = await client.post("/v1/chat/completions", json=body)
    events = _sse(resp.text)
    assert events[-1]["error"]["code"] == "backend_error"
    return resp.headers["x-request-id"]


@pytest.mark.asyncio
async def test_fifty_mixed_requests_make_fifty_exact_records(tmp_path: Path) -> None:
    with running_server(tmp_path, CONFIG) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            results = await asyncio.gather(*(_one(client, i) for i in range(48)))
            killed = await _killed_mid_stream(client)
            failed = await _failing_backend(client)
            await asyncio.sleep(0.5)  # the killed stream's record is written off the hot path
            report = (await client.get("/freshet/cost/report?group_by=backend")).json()
    # The server was stopped gracefully (SIGTERM): everything is flushed.
    with sqlite3.connect(tmp_path / "data" / "ledger.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        rows = {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM usage")}
    assert len(rows) == 50
    for request_id, cost, kind in results:
        record = rows[request_id]
        assert record["status"] == "ok", (kind, record)
        assert cost == pytest.approx(record["usd_total"], rel=1e-9, abs=1e-12), kind
        assert record["usd_total"] > 0
        assert record["joules"] > 0
        assert record["usd_total"] == pytest.approx(
            record["usd_energy"] + record["usd_capex"] + record["usd_list"]
        )
        assert record["usd_total"] == pytest.approx(record["usd_input"] + record["usd_output"])
        assert record["energy_source"] == ("simulated" if record["backend"] == "asic" else "model")
    assert rows[killed]["status"] == "client_disconnected"
    assert 3 <= rows[killed]["completion_tokens"] < 400
    assert rows[killed]["joules"] > 0
    assert rows[failed]["status"] == "error"
    assert rows[failed]["error_code"] == "backend_error"
    assert rows[failed]["completion_tokens"] == 3
    assert {r["backend"] for r in rows.values()} == {"paced", "asic", "broken"}
    # The report's sums are the records' sums, per backend and in total.
    by_backend = {row["value"]: row for row in report["rows"]}
    for backend in ("paced", "asic", "broken"):
        mine = [r for r in rows.values() if r["backend"] == backend]
        assert by_backend[backend]["requests"] == len(mine)
        for field in ("prompt_tokens", "completion_tokens", "joules", "usd_total"):
            assert by_backend[backend][field] == pytest.approx(sum(r[field] for r in mine)), field
    assert report["totals"]["requests"] == 50
    assert report["totals"]["usd_total"] == pytest.approx(
        sum(r["usd_total"] for r in rows.values())
    )
