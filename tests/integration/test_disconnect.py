"""A client that leaves mid-stream stops the generation on the real llama.cpp backend."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.support.server import Server


def _running(server: Server) -> int:
    status, body = server.get("/freshet/backends")
    assert status == 200
    return sum(b["running"] for b in json.loads(body))


@pytest.mark.asyncio
async def test_disconnect_stops_generation_and_frees_the_model(default_gateway: Server) -> None:
    # ~1,500 tokens would take over ten seconds on 2 cores if the generation kept going.
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Write a very long essay about rivers."}],
        "max_tokens": 1500,
        "temperature": 1.0,
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=default_gateway.url, timeout=30) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            seen = 0
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                if seen >= 5:
                    break
        # Leaving the `stream` block closed the connection mid-stream.

        for _ in range(60):  # up to 3 s
            if not _running(default_gateway):
                break
            await asyncio.sleep(0.05)
        assert _running(default_gateway) == 0, "generation kept running after the client left"

        started = time.monotonic()
        resp = await client.post(
            "/v1/chat/completions",
            json={
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
        )
        elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.json()["usage"]["completion_tokens"] <= 4
    assert elapsed < 3.0, f"next request waited {elapsed:.1f}s behind the abandoned one"
