"""``Retry-After`` rounds up, so a client that obeys it is admitted; a budget held only by
reservations in flight is a 429 with ``Retry-After``, 402 only once the settled spend
leaves no room (issue #16, points 7 and 8a). The Redis twins are in
``tests/redis/test_limits_retry_redis.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.errors import InsufficientQuota, RateLimited, retry_after_header
from gateway.settings import load_settings
from gateway.state.keys import ApiKey, new_key
from gateway.state.keys_sqlite import SQLiteKeyStore
from gateway.state.limits import HELD_RETRY_S, LocalLimits
from tests.support.inprocess import wait_ready

WINDOW_S = 2.0
USD_PER_TOKEN = 0.001
BUDGET_USD = 0.0085  # two requests' worth ($0.004 each with max_tokens 4)
FREE = {"watts_idle": 0, "watts_active": 0, "capex_per_hour": 0}


def test_retry_after_is_rounded_up() -> None:
    assert retry_after_header(4.33) == 5  # was round(): 4, and a retry 4 s later was refused
    assert retry_after_header(4.0) == 4
    assert retry_after_header(0.01) == 1
    assert retry_after_header(0.0) == 1
    assert RateLimited("x", retry_after_s=32.2).headers() == {"Retry-After": "33"}


def test_waiting_exactly_retry_after_is_enough_at_any_phase_of_the_window() -> None:
    """The issue's case (``window_s: 5``, refused 0.67 s into the window), and every phase."""
    now = [0.0]
    for phase in (0.0, 0.01, 0.5, 0.67, 1.0, 2.5, 4.33, 4.99):
        now[0] = 1_000_000.0 * 5 + phase
        limits = LocalLimits(window_s=5, clock=lambda: now[0])
        key = ApiKey(name="k", digest="d", created=0, rpm=1)
        limits.admit(key, 1, 0.0, 0.0)
        with pytest.raises(RateLimited) as over:
            limits.admit(key, 1, 0.0, 0.0)
        wait = int(over.value.headers()["Retry-After"])
        assert wait >= over.value.retry_after_s
        now[0] += wait
        limits.admit(key, 1, 0.0, 0.0)  # admitted, not refused again


def test_a_budget_held_by_reservations_is_429_and_402_only_when_spent() -> None:
    now = [1_000_000.0]
    limits = LocalLimits(window_s=60, clock=lambda: now[0])
    key = ApiKey(name="k", digest="d", created=0, budget_usd=1.0, budget_joules=10.0)
    a = limits.admit(key, 1, 0.6, 0.0)
    with pytest.raises(RateLimited) as held:  # $0 spent, $0.6 reserved + $0.6 > $1
        limits.admit(key, 1, 0.6, 0.0)
    assert held.value.status == 429
    assert held.value.retry_after_s == HELD_RETRY_S
    assert "held by requests in flight" in held.value.message
    limits.settle(a, 0.5, 0.0, 1)  # really cost $0.5: $0.5 spent, nothing held
    b = limits.admit(key, 1, 0.4, 0.0)
    limits.settle(b, 0.5, 0.0, 1)  # $1.0 spent: the budget is reached
    with pytest.raises(InsufficientQuota) as spent:
        limits.admit(key, 1, 0.01, 0.0)
    assert spent.value.status == 402
    # Joules the same way.
    c = limits.admit(key, 1, 0.0, 8.0)
    with pytest.raises(RateLimited):
        limits.admit(key, 1, 0.0, 4.0)
    limits.settle(c, 0.0, 8.0, 1)
    with pytest.raises(InsufficientQuota):
        limits.admit(key, 1, 0.0, 4.0)


def test_a_quote_larger_than_what_settled_spend_leaves_is_402() -> None:
    """Waiting cannot help when the settled spend alone leaves no room for the quote."""
    limits = LocalLimits(window_s=60, clock=lambda: 1_000_000.0)
    key = ApiKey(name="k", digest="d", created=0, budget_usd=1.0)
    limits.settle(limits.admit(key, 1, 0.1, 0.0), 0.7, 0.0, 1)
    limits.admit(key, 1, 0.2, 0.0)  # $0.7 spent, $0.2 held
    with pytest.raises(InsufficientQuota):
        limits.admit(key, 1, 0.5, 0.0)  # $0.7 + $0.5 > $1 whatever the reservations do


async def _make_key(tmp_path: Path, name: str, **limits: Any) -> str:
    store = SQLiteKeyStore(tmp_path / "data")
    secret, key = new_key(name, **limits)
    await store.add(key)
    await store.aclose()
    return secret


@pytest_asyncio.fixture
async def gateway(
    tmp_path: Path,
) -> AsyncIterator[tuple[AsyncTestClient[Any], Runtime, dict[str, str]]]:
    config = {
        "backends": [
            {
                "id": "slow",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "m",
                "profile": FREE,
                "energy": {"meter": "model"},
                "list_price": {"output_per_mtok": USD_PER_TOKEN * 1e6},
            }
        ],
        "limits": {"window_s": WINDOW_S},
    }
    secrets = {
        "rpm": await _make_key(tmp_path, "rpm", rpm=1),
        "budget": await _make_key(tmp_path, "budget", budget_usd=BUDGET_USD),
    }
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path / "data")})
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(settings, runtime), timeout=60) as client:
        await wait_ready(client)
        yield client, runtime, secrets


def _chat(max_tokens: int = 4) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}


async def _at_phase(lo: float, hi: float) -> None:
    """Wait until the wall clock is between ``lo`` and ``hi`` seconds into a window."""
    phase = time.time() % WINDOW_S
    if not lo <= phase < hi:
        await asyncio.sleep((lo - phase) % WINDOW_S + 0.01)


@pytest.mark.asyncio
async def test_a_client_that_waits_exactly_retry_after_is_admitted(gateway: Any) -> None:
    """Real time, a 2 s window, refused 0.6-0.9 s into it: the real wait is 1.1-1.4 s,
    which round() made ``Retry-After: 1`` (and the retry landed in the same window)."""
    client, _, secrets = gateway
    headers = {"authorization": f"Bearer {secrets['rpm']}"}
    for _ in range(2):
        await _at_phase(0.6, 0.9)
        refused = await client.post("/v1/chat/completions", json=_chat(1), headers=headers)
        if refused.status_code == 200:  # this window's one request; the next is refused
            refused = await client.post("/v1/chat/completions", json=_chat(1), headers=headers)
        assert refused.status_code == 429, refused.text
        wait = int(refused.headers["retry-after"])
        assert wait == 2
        await asyncio.sleep(wait)
        again = await client.post("/v1/chat/completions", json=_chat(1), headers=headers)
        assert again.status_code == 200, (wait, again.text)


@pytest.mark.asyncio
async def test_reservations_in_flight_give_429_then_402_once_spent(gateway: Any) -> None:
    client, runtime, secrets = gateway
    headers = {"authorization": f"Bearer {secrets['budget']}"}
    url = "/v1/chat/completions"
    first = await client.post(url, json=_chat(), headers=headers)
    assert first.status_code == 200  # $0.004 spent
    # A request in flight elsewhere holds $0.004 (as the service's admission does).
    local: LocalLimits = runtime.shared.limits.local
    key = ApiKey(name="budget", digest="d", created=0, budget_usd=BUDGET_USD)
    in_flight = local.admit(key, 8, 4 * USD_PER_TOKEN, 0.0)
    held = await client.post(url, json=_chat(), headers=headers)
    assert held.status_code == 429, held.text  # was 402 with $0.004 of $0.0085 spent
    assert held.json()["error"]["code"] == "rate_limit_exceeded"
    assert held.headers["retry-after"] == "1"
    local.settle(in_flight, 4 * USD_PER_TOKEN, 0.0, 8)  # it ends: $0.008 spent
    spent = await client.post(url, json=_chat(), headers=headers)
    assert spent.status_code == 402, spent.text
    assert spent.json()["error"]["code"] == "insufficient_quota"
    assert "retry-after" not in spent.headers
