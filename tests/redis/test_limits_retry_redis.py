"""The shared (Lua) limits: ``Retry-After`` rounds up, so waiting exactly that long is
admitted; a budget held by reservations in flight is a 429, 402 only once it is spent
(issue #16, points 7 and 8a; the in-process twins are in tests/unit/state)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.errors import InsufficientQuota, RateLimited
from gateway.settings import RedisSettings
from gateway.state.keys import ApiKey
from gateway.state.limits import HELD_RETRY_S
from gateway.state.limits_redis import RedisLimits
from gateway.state.redis import RedisStore

WINDOW_S = 2.0


@pytest_asyncio.fixture
async def limits(redis_url: str) -> AsyncIterator[tuple[RedisLimits, RedisLimits]]:
    a, b = RedisStore(RedisSettings(url=redis_url)), RedisStore(RedisSettings(url=redis_url))
    await a.start()
    await b.start()
    yield RedisLimits(a, window_s=WINDOW_S), RedisLimits(b, window_s=WINDOW_S)
    await a.aclose()
    await b.aclose()


@pytest.mark.asyncio
async def test_waiting_exactly_retry_after_is_admitted(
    limits: tuple[RedisLimits, RedisLimits],
) -> None:
    """Real time (Redis's clock is this machine's), refused 0.6-0.9 s into a 2 s window:
    round() said 1 s and the retry fell in the same window."""
    a, b = limits
    key = ApiKey(name="k", digest="d", created=0, rpm=1)
    for _ in range(2):
        phase = time.time() % WINDOW_S
        if not 0.6 <= phase < 0.9:
            await asyncio.sleep((0.6 - phase) % WINDOW_S + 0.01)
        with contextlib.suppress(RateLimited):  # the previous round's retry may hold it
            await a.admit(key, 1, 0.0, 0.0)  # this window's one request
        with pytest.raises(RateLimited) as over:
            await b.admit(key, 1, 0.0, 0.0)
        wait = int(over.value.headers()["Retry-After"])
        assert wait == 2
        await asyncio.sleep(wait)
        await b.admit(key, 1, 0.0, 0.0)  # admitted


@pytest.mark.asyncio
async def test_a_budget_held_in_flight_is_429_and_402_only_when_spent(
    limits: tuple[RedisLimits, RedisLimits],
) -> None:
    a, b = limits
    key = ApiKey(name="k", digest="d", created=0, budget_usd=1.0, budget_joules=10.0)
    r = await a.admit(key, 1, 0.6, 0.0)  # in flight on process a
    with pytest.raises(RateLimited) as held:  # $0 spent: process b is told to come back
        await b.admit(key, 1, 0.6, 0.0)
    assert held.value.retry_after_s == HELD_RETRY_S
    assert "held by requests in flight" in held.value.message
    a.settle(r, 0.5, 0.0, 1)
    await a.aclose()  # waits for the settlement task
    r = await b.admit(key, 1, 0.4, 0.0)  # $0.5 spent + $0.4 fits
    b.settle(r, 0.5, 0.0, 1)
    await b.aclose()
    with pytest.raises(InsufficientQuota, match=r"\$1\.000000 of \$1\.000000 spent"):
        await a.admit(key, 1, 0.01, 0.0)
    # Joules the same way.
    r = await a.admit(key, 1, 0.0, 8.0)
    with pytest.raises(RateLimited):
        await b.admit(key, 1, 0.0, 4.0)
    a.settle(r, 0.0, 8.0, 1)
    await a.aclose()
    with pytest.raises(InsufficientQuota):
        await b.admit(key, 1, 0.0, 4.0)
