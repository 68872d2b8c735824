"""Quotes that tell the truth (issue #20): a quote counts the work a backend has committed
(``BackendStatus.busy_s``), ``max_ttft_ms`` is honoured on it, every usage record carries
its quote beside what happened, and under load the quoted TTFT is within 25 % of the
actual at p90, on the ASIC simulator and on the CPU model (SmolLM2 on llama.cpp)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import Server, running_server

# The fleet: two etched cards, one slow and nearly free, one fast and dear.
SCENARIO = {
    "backends": [
        {
            "id": "cheap",
            "type": "asic-sim",
            "model": "cheap-8b",
            "knowledge_cutoff": "2023-12-01",
            "decode_tokens_per_s": 25,
            "capex_per_card_hour": 0.1,
        },
        {
            "id": "dear",
            "type": "asic-sim",
            "model": "dear-8b",
            "knowledge_cutoff": "2023-12-01",
            "decode_tokens_per_s": 2000,
            "capex_per_card_hour": 40,
        },
    ],
    "groups": {"auto": ["cheap", "dear"]},
}
MESSAGES = [{"role": "user", "content": "Say something."}]


def _client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=120)


def _records(server: Server, limit: int = 1000) -> list[dict[str, Any]]:
    page = httpx.get(f"{server.url}/freshet/usage?limit={limit}", timeout=60).json()
    data: list[dict[str, Any]] = page["data"]
    return data


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("quote-scenario"), SCENARIO) as server:
        yield server


def test_a_busy_cheap_card_is_quoted_with_its_committed_work(scenario: Server) -> None:
    client = _client(scenario)
    # 100 tokens at 25 tok/s: cheap's only stream is taken for 4 s.
    long = threading.Thread(
        target=lambda: client.chat.completions.create(
            model="cheap-8b", messages=MESSAGES, max_tokens=100
        )
    )
    long.start()
    try:
        time.sleep(0.5)
        body = {"model": "auto", "messages": MESSAGES, "max_tokens": 8}
        free = httpx.post(f"{scenario.url}/freshet/route", json=body, timeout=60).json()
        cheap = next(c for c in free["candidates"] if c["backend"] == "cheap")
        # ~3.5 s left of the running request, not the new request's 0.32 s.
        assert 2.5 < cheap["quote"]["queue_s"] < 3.7
        assert cheap["quote"]["ttft_s"] > 2.5
        assert free["chosen"] == "cheap"  # without a TTFT limit the cheap card still wins

        limited = {**body, "max_ttft_ms": 500}
        route = httpx.post(f"{scenario.url}/freshet/route", json=limited, timeout=60).json()
        assert route["chosen"] == "dear"
        dropped = next(c for c in route["candidates"] if c["backend"] == "cheap")
        assert dropped["reason"].startswith("ttft(")
        assert dropped["quote"]["queue_s"] > 2.5

        # The real request with the limit goes to the fast card, and keeps its promise.
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, max_tokens=8, extra_body={"max_ttft_ms": 500}
        )
        assert raw.headers["x-freshet-backend"] == "dear"
    finally:
        long.join()
    served = next(
        r for r in _records(scenario, 5) if r["request_id"] == raw.headers["x-request-id"]
    )
    assert served["ttft_s"] < 0.5
    assert served["quoted_ttft_s"] is not None
    assert served["quoted_ttft_s"] < 0.5
    assert served["quoted_usd"] > 0
    assert served["quoted_joules"] > 0
