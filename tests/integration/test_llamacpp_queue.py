"""The CPU backend's bounded concurrency: one model instance, a queue of one, then 429."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


@pytest.mark.asyncio
async def test_requests_beyond_the_queue_get_429_with_retry_after(tmp_path: Path) -> None:
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 150,
        "temperature": 1.0,
    }
    with running_server(tmp_path, CONFIG) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            await asyncio.sleep(0.3)  # first is generating
            second = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            await asyncio.sleep(0.3)  # second waits in the queue of one
            third = await client.post("/v1/chat/completions", json=body)
            results = await asyncio.gather(first, second)
    assert third.status_code == 429
    error = third.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "rate_limit_error"
    assert int(third.headers["retry-after"]) >= 1
    assert [r.status_code for r in results] == [200, 200]
    assert all(r.json()["usage"]["completion_tokens"] > 0 for r in results)
