"""The Responses API's store on a real Redis: two processes' stores see one another's
responses, a response expires after its time, the oldest go past the size bound, and a
Redis that is down is a 503 (not a 404 that would say the response does not exist)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.api.responses.store import RedisResponses, find
from gateway.errors import BackendUnavailable, NotFound
from gateway.settings import RedisSettings
from gateway.settings.sections import ResponseStoreSettings
from gateway.state.redis import RedisStore
from tests.support.server import free_port
from tests.unit.api.test_response_store import stored


@pytest.mark.asyncio
async def test_shared_by_two_processes(redis_url: str) -> None:
    a, b = RedisStore(RedisSettings(url=redis_url)), RedisStore(RedisSettings(url=redis_url))
    await a.start()
    await b.start()
    mine, theirs = (
        RedisResponses(a, ResponseStoreSettings()),
        RedisResponses(b, ResponseStoreSettings()),
    )
    await mine.put(stored("resp_1", text="from a"))
    found = await find(theirs, "resp_1", "alice", "previous_response_id")
    assert found.input[0].content == "hi resp_1"
    assert found.response.output[0].content[0].text == "from a"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await find(theirs, "resp_1", "bob", "previous_response_id")
    assert await theirs.delete("resp_1")
    assert await mine.get("resp_1") is None
    await a.aclose()
    await b.aclose()


@pytest.mark.asyncio
async def test_expiry_and_bound(redis_url: str) -> None:
    store = RedisStore(RedisSettings(url=redis_url))
    await store.start()
    short = RedisResponses(store, ResponseStoreSettings(ttl_days=0.5 / 86400))
    await short.put(stored("resp_old"))
    assert await short.get("resp_old") is not None
    await asyncio.sleep(0.7)
    assert await short.get("resp_old") is None
    bounded = RedisResponses(store, ResponseStoreSettings(max_stored=2))
    for n in range(4):
        await bounded.put(stored(f"resp_{n}"))
        await asyncio.sleep(0.01)
    kept = [await bounded.get(f"resp_{n}") is not None for n in range(4)]
    assert kept == [False, False, True, True]
    assert await store.client.zcard(store.key("responses")) == 2
    await store.aclose()


@pytest.mark.asyncio
async def test_redis_down_is_unavailable_not_missing() -> None:
    store = RedisStore(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2))
    responses = RedisResponses(store, ResponseStoreSettings())
    with pytest.raises(BackendUnavailable):
        await responses.get("resp_1")
    with pytest.raises(BackendUnavailable):
        await responses.put(stored("resp_1"))
    await store.aclose()
