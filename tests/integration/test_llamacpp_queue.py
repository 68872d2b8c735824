"""The CPU backend's bounded concurrency: one model instance, a queue of one, then 429.

Timing-robust (it timed out at 60 s in a cold ``make test`` on a busy machine, and passed
alone in 17 s): no sleeps that guess how far the model got and no tight client timeouts
around slow work. It waits for what it needs to see (the first request's first token, the
second one queued in ``/freshet/backends``) and asserts order and behaviour, not time.
The long first request is streamed and closed by the client once the third has been
refused, which stops its generation (a streamed disconnect stops llama.cpp at once).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import running_server

CONFIG = {
    "backends": [
        {
            "id": "cpu",
            "type": "llamacpp",
            "model": "smollm2-135m",
            "knowledge_cutoff": "2024-06-01",
            "instances": 1,
            "queue_limit": 1,
            "calibrate": False,
        },
    ],
}
URL = "/v1/chat/completions"
# Greedy counting runs long (the cap, 2,048 tokens, is far away): the first request is
# still generating whatever the machine's speed, until the client closes it.
LONG = {
    "model": "smollm2-135m",
    "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
    "max_tokens": 2048,
    "temperature": 0,
    "stream": True,
}
SHORT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
PATIENCE_S = 300.0  # a deadline for what takes under a second when the machine is idle


def _backend(listing: Any, backend_id: str) -> dict[str, Any]:
    rows = listing.get("backends", listing) if isinstance(listing, dict) else listing
    return next(row for row in rows if row.get("id") == backend_id)


async def _until_queued(client: httpx.AsyncClient, waiting: int) -> None:
    async with asyncio.timeout(PATIENCE_S):
        while True:
            cpu = _backend((await client.get("/freshet/backends")).json(), "cpu")
            if cpu["running"] == 1 and cpu["waiting"] >= waiting:
                return
            await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_requests_beyond_the_queue_get_429_with_retry_after(tmp_path: Path) -> None:
    order: list[str] = []
    with running_server(tmp_path, CONFIG) as server:
        timeout = httpx.Timeout(PATIENCE_S, connect=30.0)
        async with httpx.AsyncClient(base_url=server.url, timeout=timeout) as client:
            async with client.stream("POST", URL, json=LONG) as first:
                assert first.status_code == 200  # headers come with the first token
                lines = first.aiter_lines()
                async with asyncio.timeout(PATIENCE_S):
                    async for line in lines:
                        if line.startswith("data: {"):
                            break  # the only model instance is generating
                order.append("first generating")

                async def second_request() -> httpx.Response:
                    resp = await client.post(URL, json=SHORT)
                    order.append("second answered")
                    return resp

                second = asyncio.create_task(second_request())
                await _until_queued(client, waiting=1)  # the queue of one is full
                third = await client.post(URL, json=SHORT)
                order.append("third answered")
                assert not second.done()
                # Leaving the block closes the stream: the first request stops generating.
            async with asyncio.timeout(PATIENCE_S):
                second_resp = await second
    assert order == ["first generating", "third answered", "second answered"]
    assert third.status_code == 429, third.text
    error = third.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "rate_limit_error"
    assert int(third.headers["retry-after"]) >= 1
    assert second_resp.status_code == 200, second_resp.text
    assert second_resp.json()["usage"]["completion_tokens"] > 0
