"""A trace started by the client continues through Freshet into the vLLM plugin's request:
the fake vLLM server (tests/vllm/fake_upstream.py, on loopback) receives a `traceparent`
with the client's trace id whose parent is Freshet's `backend` span."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import openai
import pytest

from tests.support.server import Server, running_server
from tests.vllm.fake_upstream import FakeVllm

pytest.importorskip("freshet_vllm")

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class ThreadedFake:
    """The aiohttp fake on an event loop of its own, so a blocking test can drive it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake: FakeVllm = self.call(self._start())

    async def _start(self) -> FakeVllm:
        fake = FakeVllm()
        await fake.start()
        return fake

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=10)

    def close(self) -> None:
        self.call(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def fake() -> Iterator[FakeVllm]:
    threaded = ThreadedFake()
    try:
        yield threaded.fake
    finally:
        threaded.close()


@pytest.fixture
def gateway(fake: FakeVllm, tmp_path: Any) -> Iterator[Server]:
    config = {
        "backends": [
            {
                "id": "gpu",
                "type": "vllm",
                "model": "m",
                "knowledge_cutoff": "2024-06-01",
                "urls": [fake.url],
                "poll_interval_s": 0.2,
                "connect_timeout_s": 2.0,
            }
        ],
        "groups": {},
    }
    with running_server(tmp_path, config) as server:
        yield server


def test_traceparent_reaches_the_vllm_request(fake: FakeVllm, gateway: Server) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={
            "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
            "tracestate": "vendor=abc",
        },
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello there!"

    (headers,) = fake.headers
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert headers["tracestate"] == "vendor=abc"

    status, body = gateway.get(f"/freshet/traces/{TRACE_ID}")
    assert status == 200
    spans = {s["name"]: s for s in json.loads(body)["spans"]}
    assert spans["chat m"]["parent_span_id"] == CLIENT_SPAN
    backend = spans["backend gpu"]
    assert backend["parent_span_id"] == spans["chat m"]["span_id"]
    assert parent_id == backend["span_id"]  # vLLM's work hangs under Freshet's backend span
    assert backend["attributes"]["gen_ai.provider.name"] == "vllm"


def test_a_trace_freshet_starts_reaches_vllm_too(fake: FakeVllm, gateway: Server) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    (headers,) = fake.headers
    # A new trace, started by Freshet: vLLM still joins it.
    _, body = gateway.get("/freshet/traces?limit=1")
    (row,) = json.loads(body)
    assert headers["traceparent"].split("-")[1] == row["trace_id"]
