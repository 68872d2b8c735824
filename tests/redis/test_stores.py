"""The Redis stores in-process, two "processes" (store objects) on one real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.errors import InsufficientQuota, RateLimited
from gateway.ledger.redis import RedisLedger
from gateway.ledger.sqlite import UsageQuery
from gateway.outcome import UsageRecord
from gateway.settings import HealthSettings, RedisSettings
from gateway.state.health_redis import POLL_S, RedisHealth
from gateway.state.keys import ApiKey, KeyRing, digest, new_key
from gateway.state.keys_redis import RedisKeyStore
from gateway.state.limits_redis import RedisLimits
from gateway.state.redis import RedisStore
from tests.support.server import free_port


@pytest_asyncio.fixture
async def stores(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a, b = RedisStore(RedisSettings(url=redis_url)), RedisStore(RedisSettings(url=redis_url))
    await a.start()
    await b.start()
    yield a, b
    await a.aclose()
    await b.aclose()


def _record(request_id: str, usd: float = 0.01) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        ts=time.time(),
        key="k",
        group=None,
        requested_model="m",
        backend="b",
        backend_kind="cpu",
        model="m",
        adapter=None,
        knowledge_cutoff=None,
        operation="chat",
        stream=False,
        status="ok",
        error_code=None,
        prompt_tokens=3,
        completion_tokens=4,
        ttft_s=0.01,
        duration_s=0.02,
        joules=1.0,
        energy_source="model",
        joules_input=0.5,
        joules_output=0.5,
        usd_energy=0.0,
        usd_capex=0.0,
        usd_list=usd,
        usd_input=0.0,
        usd_output=usd,
        usd_total=usd,
    )


@pytest.mark.asyncio
async def test_limits_are_one_counter_for_all_processes(stores: tuple[RedisStore, ...]) -> None:
    a, b = (RedisLimits(s, window_s=60) for s in stores)
    key = ApiKey(name="k", digest="d", created=0, rpm=3, tpm=100, budget_joules=10.0)
    r1 = await a.admit(key, 40, 0.0, 4.0)
    await b.admit(key, 40, 0.0, 4.0)
    with pytest.raises(RateLimited) as tpm:
        await a.admit(key, 40, 0.0, 1.0)  # 80 + 40 tokens > 100
    assert 0 < tpm.value.retry_after_s <= 60
    with pytest.raises(RateLimited):  # 8 J reserved + 4 > 10, none settled: 429, not 402
        await b.admit(key, 10, 0.0, 4.0)
    a.settle(r1, 0.0, 1.0, 10)  # really 1 J and 10 tokens: frees 3 J and 30 tokens
    await a.aclose()  # waits for the settlement task
    await b.admit(key, 10, 0.0, 4.0)
    with pytest.raises(RateLimited, match="3 requests"):
        await a.admit(key, 1, 0.0, 0.0)


@pytest.mark.asyncio
async def test_settlements_made_while_redis_is_down_are_added_later(redis_url: str) -> None:
    port = free_port()  # nothing listens there: Redis "down"
    down = RedisStore(RedisSettings(url=f"redis://127.0.0.1:{port}/0", timeout_s=0.2))
    await down.start()
    assert not down.up
    limits = RedisLimits(down, window_s=60)
    key = ApiKey(name="k", digest="d", created=0, budget_usd=1.0)
    r = await limits.admit(key, 1, 0.3, 0.0)
    assert not r.shared
    assert down.stats.local_admissions == 1
    limits.settle(r, 0.25, 0.0, 1)
    # The per-process fallback enforces the budget on its own.
    with pytest.raises(InsufficientQuota):
        await limits.admit(key, 1, 0.8, 0.0)
    up = RedisStore(RedisSettings(url=redis_url))
    shared = RedisLimits(up, window_s=60)
    shared._owed = limits._owed  # what the first process owes, replayed by the same code
    await shared.replay()
    with pytest.raises(InsufficientQuota, match=r"\$0\.250000"):
        await shared.admit(key, 1, 0.8, 0.0)
    await asyncio.gather(down.aclose(), up.aclose())


@pytest.mark.asyncio
async def test_a_circuit_opened_by_one_process_is_open_in_the_other(
    stores: tuple[RedisStore, ...],
) -> None:
    breaker = HealthSettings(consecutive_failures=2, ejection_s=0.6)
    a, b = (RedisHealth(s, breaker) for s in stores)
    await a.start()
    await b.start()
    try:
        a.failure("x")
        b.failure("x")  # consecutive failures count across processes
        await asyncio.sleep(0.05)
        started = time.monotonic()
        while b.available("x") or a.available("x"):
            assert time.monotonic() - started < 2 * POLL_S + 0.2
            await asyncio.sleep(0.02)
        assert b.circuit("x").state == "open"
        await asyncio.sleep(0.7)  # open_for_s passes: half-open, probes go through
        assert a.available("x")
        assert b.circuit("x").state == "half_open"
        b.success("x")
        await asyncio.sleep(2 * POLL_S + 0.1)
        assert a.circuit("x").state == "closed"
        assert a.circuit("x").failures == 0
    finally:
        await asyncio.gather(a.aclose(), b.aclose())


@pytest.mark.asyncio
async def test_the_ejected_share_and_the_rate_are_kept_across_processes(
    stores: tuple[RedisStore, ...],
) -> None:
    rules = HealthSettings(consecutive_failures=2, min_requests=4, ejection_s=5)
    groups = {"pair": ["x", "y"]}
    a, b = (RedisHealth(s, rules, groups) for s in stores)
    await a.start()
    await b.start()
    try:
        a.failure("x")
        a.failure("x")  # two in a row: x is out
        await asyncio.sleep(0.05)
        b.failure("y")
        b.failure("y")  # b has not seen it yet, but Redis knows x is out: y stays in
        await asyncio.sleep(0.05)
        assert b.circuit("y").state == "closed"
        assert b.view("y").capped == 1
        await asyncio.sleep(2 * POLL_S)
        assert b.circuit("x").state == "open"
        # A failure rate is each process's own: 2 of 4 requests here, none in a row.
        for _ in range(2):
            a.success("z")
            a.failure("z")
        await asyncio.sleep(0.05)
        started = time.monotonic()
        while b.circuit("z").state != "open":
            assert time.monotonic() - started < 2 * POLL_S + 0.2
            await asyncio.sleep(0.02)
        assert b.circuit("z").ejections == 1
    finally:
        await asyncio.gather(a.aclose(), b.aclose())


@pytest.mark.asyncio
async def test_keys_on_redis_are_seen_and_revoked_everywhere(
    stores: tuple[RedisStore, ...],
) -> None:
    a, b = (KeyRing(RedisKeyStore(s), refresh_s=3600) for s in stores)
    await a.refresh()
    await b.refresh()
    secret, key = new_key("shared", rpm=5)
    await a.store.add(key)
    found = await b.lookup(digest(secret))  # a miss goes to the store at once
    assert found is not None
    assert found.rpm == 5
    assert await b.store.revoke("shared")
    await a.refresh()
    revoked = await a.lookup(digest(secret))
    assert revoked is not None
    assert revoked.revoked
    assert not await a.store.revoke("nobody")


@pytest.mark.asyncio
async def test_ledger_counts_each_record_once_and_mirrors_agree(
    stores: tuple[RedisStore, ...], tmp_path: Path
) -> None:
    one = RedisLedger(stores[0], tmp_path / "one")
    two = RedisLedger(stores[1], tmp_path / "two")
    await one.start()
    await two.start()
    try:
        for i in range(30):
            (one if i % 2 else two).record(_record(f"r{i}"))
        await one._send()
        await two._send()
        await one._xadd([_record("r3"), _record("r4")])  # sent twice (a resend)
        await one.flush()
        await two.flush()
        deadline = time.monotonic() + 10
        while (await one.query(UsageQuery()))[1] < 30 or (await two.query(UsageQuery()))[1] < 30:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
            await one.flush()
            await two.flush()
        sql = "SELECT COUNT(*), SUM(usd_total) FROM usage"
        assert await one.rows(sql, []) == await two.rows(sql, [])
        assert (await one.rows(sql, []))[0][0] == 30
        count = await stores[0].client.get("freshet:ledger:count")
        assert count == b"30"
        # Redis loses an aggregated record (a crash before fsync): it is sent again.
        await stores[0].client.hdel("freshet:ledger:records", "r7")
        await one._confirm(0.0, persist_s=60)  # r7 is one's: not yet forgotten
        sent = one._sent["r7"]
        sent.at -= 60  # long ago
        await one._confirm(0.0, persist_s=60)
        await one.flush()
        assert await stores[0].client.hexists("freshet:ledger:records", "r7")
    finally:
        await one.aclose()
        await two.aclose()
