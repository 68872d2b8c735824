"""A client that leaves a non-streaming request stops the work (issue #16.2): the proxied
upstream's connection is closed, and the record says ``client_disconnected`` with the
tokens that were really generated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.ledger.sqlite import UsageQuery
from gateway.settings import load_settings
from tests.support.asgi import http_scope
from tests.vllm.fake_upstream import FakeVllm


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[FakeVllm]:
    fake = FakeVllm()
    fake.mode = "slow"  # a word every 50 ms, for a long time
    await fake.start()
    yield fake
    await fake.close()


async def _gateway(tmp: Path, upstream_url: str) -> tuple[Any, Runtime]:
    config = {
        "backends": [
            {
                "id": "api",
                "type": "openai-compatible",
                "model": "m",
                "knowledge_cutoff": "2024-06-01",
                "url": upstream_url,
            },
            {
                "id": "det",
                "type": "deterministic",
                "model": "det",
                "knowledge_cutoff": "2024-06-01",
                "tokens_per_s": 20,
                "max_output_tokens": 1000,
            },
            {
                # The etched card, slowed to 20 tokens a second a stream.
                "id": "asic",
                "type": "asic-sim",
                "model": "asic",
                "knowledge_cutoff": "2023-12-01",
                "decode_tokens_per_s": 20,
                "max_output_tokens": 1000,
            },
        ]
    }
    path = tmp / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp)})
    runtime = Runtime(settings)
    return create_app(settings, runtime), runtime


async def _leave_after(app: Any, body: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """POST ``body``, then disconnect after ``seconds``; what the app sent comes back."""
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    scope = http_scope("POST", "/v1/chat/completions", headers)
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(seconds)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=60)
    return sent


async def _record(runtime: Runtime) -> Any:
    for _ in range(200):
        await runtime.ledger.flush()
        records, _ = await runtime.ledger.query(UsageQuery(limit=10))
        if records:
            (record,) = records
            return record
        await asyncio.sleep(0.05)
    raise AssertionError("no usage record")


def _chat(model: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
    }


@pytest.mark.asyncio
async def test_leaving_a_proxied_request_closes_the_upstream(
    tmp_path: Path, upstream: FakeVllm
) -> None:
    app, runtime = await _gateway(tmp_path, upstream.url)
    # The app's lifespan on this loop: the backend's connections are this loop's.
    async with app.lifespan():
        await asyncio.wait_for(runtime.ready.wait(), 30)
        sent = await _leave_after(app, _chat("m", 5000), 0.5)
        assert sent == []  # nothing was answered: nobody was there to read it
        # The upstream saw its connection closed (it streams for minutes otherwise).
        async with asyncio.timeout(10):
            await upstream.disconnected.wait()
        record = await _record(runtime)
    assert record.status == "client_disconnected"
    assert 0 < record.completion_tokens < 200  # ~10 words in 0.5 s, not 5,000


@pytest.mark.asyncio
async def test_leaving_a_local_generation_stops_it(tmp_path: Path) -> None:
    app, runtime = await _gateway(tmp_path, "http://127.0.0.1:9")
    async with app.lifespan():
        await asyncio.wait_for(runtime.ready.wait(), 30)
        # 800 tokens at 20 a second would take 40 s.
        await _leave_after(app, _chat("det", 800), 0.5)
        record = await _record(runtime)
        status = await runtime.fleet.get("det").status()
    assert record.status == "client_disconnected"
    assert record.completion_tokens < 100
    assert status.running == 0


@pytest.mark.asyncio
async def test_leaving_the_asic_simulator_releases_its_stream(tmp_path: Path) -> None:
    app, runtime = await _gateway(tmp_path, "http://127.0.0.1:9")
    async with app.lifespan():
        await asyncio.wait_for(runtime.ready.wait(), 30)
        await _leave_after(app, _chat("asic", 800), 0.5)
        record = await _record(runtime)
        status = await runtime.fleet.get("asic").status()
    assert record.status == "client_disconnected"
    assert record.completion_tokens < 100
    assert status.running == 0  # the card's stream is free again
