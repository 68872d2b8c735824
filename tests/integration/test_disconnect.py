"""A client that leaves stops the generation on the real llama.cpp backend, streamed or
not (issue #16.2), and the record says so with the tokens really generated.

No wall-clock bound on the machine's speed: what proves the work stopped is the record
(far fewer tokens than asked for) and the model being free again, each within a deadline
generous enough for a busy machine."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from typing import Any

import httpx
import pytest

from tests.support.server import Server

MAX_TOKENS = 1500  # minutes of work on 2 busy cores if the generation kept going


def _running(server: Server) -> int:
    status, body = server.get("/freshet/backends")
    assert status == 200
    return sum(b["running"] for b in json.loads(body))


def _record(server: Server, request_id: str, deadline_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with sqlite3.connect(server.data_dir / "ledger.sqlite3") as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM usage WHERE request_id = ?", (request_id,)).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.1)
    raise AssertionError(f"no record for {request_id}")


def _wait_idle(server: Server, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and _running(server):
        time.sleep(0.05)
    assert _running(server) == 0, "generation kept running after the client left"


def _body(stream: bool) -> dict[str, Any]:
    return {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Write a very long essay about rivers."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 1.0,
        "stream": stream,
    }


@pytest.mark.asyncio
async def test_leaving_a_stream_stops_generation_and_frees_the_model(
    default_gateway: Server,
) -> None:
    async with httpx.AsyncClient(base_url=default_gateway.url, timeout=120) as client:
        async with client.stream("POST", "/v1/chat/completions", json=_body(True)) as resp:
            assert resp.status_code == 200
            request_id = resp.headers["x-request-id"]
            seen = 0
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                if seen >= 5:
                    break
        # Leaving the `stream` block closed the connection mid-stream.
        await asyncio.to_thread(_wait_idle, default_gateway)
        record = await asyncio.to_thread(_record, default_gateway, request_id)
        assert record["status"] == "client_disconnected"
        assert record["completion_tokens"] < MAX_TOKENS // 3
        # The model is free, and counts the same prompt as the record does: the real
        # count (told on the first token), not the router's estimate.
        resp = await client.post("/v1/chat/completions", json={**_body(False), "max_tokens": 4})
    assert resp.status_code == 200
    assert resp.json()["usage"]["completion_tokens"] <= 4
    assert record["prompt_tokens"] == resp.json()["usage"]["prompt_tokens"]


def test_leaving_a_plain_request_stops_generation_too(default_gateway: Server) -> None:
    body = json.dumps(_body(False)).encode()
    with socket.create_connection(("127.0.0.1", default_gateway.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        # Until the model is working on it, then the client goes.
        deadline = time.monotonic() + 60
        while not _running(default_gateway) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
    _wait_idle(default_gateway)
    status, raw = default_gateway.get("/freshet/usage?limit=1")
    assert status == 200
    (record,) = json.loads(raw)["data"]
    assert record["status"] == "client_disconnected"
    assert record["stream"] is False
    assert 0 < record["completion_tokens"] < MAX_TOKENS // 3
