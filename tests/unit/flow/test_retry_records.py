"""A non-streaming request that falls back after a failure makes exactly one usage record
with every backend it tried, and ends with the error that made it retry (issue #16.3)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.ledger.sqlite import UsageQuery
from gateway.settings import load_settings
from tests.support.inprocess import wait_ready

PROFILE = {"watts_active": 50, "decode_tokens_per_s": 100, "capex_per_hour": 1.0}
BACKENDS = [
    {
        "id": "broken",
        "type": "deterministic",
        "knowledge_cutoff": "unknown",
        "model": "m-broken",
        "fail_before_first": True,
    },
    {
        "id": "flaky",
        "type": "deterministic",
        "knowledge_cutoff": "unknown",
        "model": "m-flaky",
        "fail_after_tokens": 3,
    },
    {
        "id": "flaky2",
        "type": "deterministic",
        "knowledge_cutoff": "unknown",
        "model": "m-flaky2",
        "fail_after_tokens": 2,
    },
    {"id": "good", "type": "deterministic", "knowledge_cutoff": "unknown", "model": "m-good"},
]
for _backend in BACKENDS:
    _backend["profile"] = PROFILE
BACKENDS[0]["profile"] = {**PROFILE, "watts_active": 1, "capex_per_hour": 0.01}  # cheapest
GROUPS = {
    # The defect: primary fails before its first byte, the fallback dies mid-stream.
    "broken-then-flaky": ["broken", "flaky"],
    "flaky-then-good": ["flaky", "good"],
    "flaky-then-flaky": ["flaky", "flaky2"],
    "broken-then-good": ["broken", "good"],
}


@pytest_asyncio.fixture
async def gateway(tmp_path: Any) -> AsyncIterator[tuple[AsyncTestClient[Any], Runtime]]:
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode({"backends": BACKENDS, "groups": GROUPS}))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(settings, runtime)) as client:
        await wait_ready(client)
        yield client, runtime


async def _records(runtime: Runtime) -> list[Any]:
    await runtime.ledger.flush()
    records, _ = await runtime.ledger.query(UsageQuery(limit=100))
    return records


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 6}


@pytest.mark.asyncio
async def test_refused_then_cut_ends_with_the_cut_and_one_record(gateway: Any) -> None:
    client, runtime = gateway
    resp = await client.post("/v1/chat/completions", json=_chat("broken-then-flaky"))
    # Not a routing error of the retry (it was 422 freshness_unsatisfiable "needs none").
    assert resp.status_code >= 500, resp.text
    assert resp.json()["error"]["code"] != "freshness_unsatisfiable"
    assert "mid-stream" in resp.json()["error"]["message"]
    (record,) = await _records(runtime)
    assert record.backend == "flaky"
    assert record.status == "error"
    assert record.completion_tokens == 3  # what the fallback delivered before it died
    assert record.fallbacks == 1
    attempts = json.loads(record.attempts)
    assert [a["backend"] for a in attempts] == ["broken", "flaky"]
    assert attempts[1]["completion_tokens"] == 3


@pytest.mark.asyncio
async def test_a_cut_then_a_good_fallback_bills_both(gateway: Any) -> None:
    client, runtime = gateway
    resp = await client.post("/v1/chat/completions", json=_chat("flaky-then-good"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-freshet-backend"] == "good"
    (record,) = await _records(runtime)
    assert (record.backend, record.status, record.fallbacks) == ("good", "ok", 1)
    attempts = json.loads(record.attempts)
    assert [(a["backend"], a["status"]) for a in attempts] == [("flaky", "error"), ("good", "ok")]
    assert attempts[0]["completion_tokens"] == 3
    # The failed attempt's dollars are in the record's total, and the client's bill.
    assert record.usd_total == pytest.approx(sum(a["usd_total"] for a in attempts))
    assert attempts[0]["usd_total"] > 0
    assert resp.json()["usage"]["cost"] == pytest.approx(record.usd_total, rel=1e-6)


@pytest.mark.asyncio
async def test_two_cuts_end_with_the_last_error_and_one_record(gateway: Any) -> None:
    client, runtime = gateway
    resp = await client.post("/v1/chat/completions", json=_chat("flaky-then-flaky"))
    assert resp.status_code >= 500
    (record,) = await _records(runtime)
    assert record.backend == "flaky2"
    assert record.fallbacks == 1
    assert [a["backend"] for a in json.loads(record.attempts)] == ["flaky", "flaky2"]


@pytest.mark.asyncio
async def test_a_single_attempt_keeps_attempts_empty(gateway: Any) -> None:
    client, runtime = gateway
    resp = await client.post("/v1/chat/completions", json=_chat("m-good"))
    assert resp.status_code == 200
    (record,) = await _records(runtime)
    assert record.attempts is None
    assert record.fallbacks == 0


@pytest.mark.asyncio
async def test_the_route_header_quotes_the_deployment_that_served(gateway: Any) -> None:
    client, _ = gateway
    fell_over = await client.post("/v1/chat/completions", json=_chat("broken-then-good"))
    direct = await client.post("/v1/chat/completions", json=_chat("m-good"))
    assert fell_over.headers["x-freshet-backend"] == "good"

    def quote(resp: Any) -> str:
        parts = dict(p.split("=", 1) for p in resp.headers["x-freshet-route"].split("; ")[1:])
        return parts["quote_usd"]

    assert quote(fell_over) == quote(direct)
