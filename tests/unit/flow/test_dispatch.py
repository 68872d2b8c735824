"""Fallback before the first byte, error events after it: in-process app, deterministic backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.builtins.deterministic import DeterministicBackend
from gateway.settings import load_settings
from tests.support.inprocess import wait_ready


def _settings(tmp_path: Any, backends: list[dict[str, Any]], groups: dict[str, list[str]]) -> Any:
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode({"backends": backends, "groups": groups}))
    return load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})


@pytest_asyncio.fixture
async def fleet_client(tmp_path: Any) -> AsyncIterator[tuple[AsyncTestClient[Any], Runtime]]:
    settings = _settings(
        tmp_path,
        [
            {
                "id": "broken",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "m-broken",
                "fail_before_first": True,
            },
            {
                "id": "flaky",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "m-flaky",
                "fail_after_tokens": 3,
            },
            {
                "id": "small",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "m-small",
                "max_context": 8,
            },
            {
                "id": "good",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "m-good",
            },
        ],
        {
            "broken-first": ["broken", "good"],
            "small-first": ["small", "good"],
            "all-broken": ["broken"],
            "flaky-first": ["flaky", "good"],
        },
    )
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(settings, runtime)) as client:
        await wait_ready(client)
        yield client, runtime


def _chat(model: str, content: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.asyncio
async def test_failure_before_first_chunk_falls_back(fleet_client: Any) -> None:
    client, _ = fleet_client
    resp = await client.post("/v1/chat/completions", json=_chat("broken-first", max_tokens=3))
    assert resp.status_code == 200
    assert resp.headers["x-freshet-backend"] == "good"
    assert "failed_over=1" in resp.headers["x-freshet-route"]
    assert resp.json()["model"] == "m-good"


@pytest.mark.asyncio
async def test_context_too_long_for_one_candidate_falls_back(fleet_client: Any) -> None:
    client, _ = fleet_client
    resp = await client.post(
        "/v1/chat/completions", json=_chat("small-first", "a b c d e f g h i j", max_tokens=2)
    )
    assert resp.status_code == 200
    assert resp.headers["x-freshet-backend"] == "good"
    direct = await client.post("/v1/chat/completions", json=_chat("m-small", "a b c d e f g h i j"))
    assert direct.status_code == 400
    assert direct.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.asyncio
async def test_all_candidates_failing_is_502_naming_each(fleet_client: Any) -> None:
    # Tried, and failed: a bad gateway; 503 is the gateway's own refusal (nothing to try).
    client, _ = fleet_client
    resp = await client.post("/v1/chat/completions", json=_chat("all-broken"))
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "backend_error"
    assert "broken:" in error["message"]
    assert resp.headers["x-request-id"]


@pytest.mark.asyncio
async def test_mid_stream_failure_is_an_error_event_then_done(fleet_client: Any) -> None:
    client, _ = fleet_client
    resp = await client.post(
        "/v1/chat/completions", json=_chat("m-flaky", max_tokens=10, stream=True)
    )
    assert resp.status_code == 200
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    payloads = [msgspec.json.decode(e) for e in events[:-1]]
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [p for p in payloads if "choices" in p and p["choices"][0]["delta"].get("content")]
    assert len(content) == 3
    assert payloads[-1]["error"]["code"] == "backend_error"
    assert "mid-stream" in payloads[-1]["error"]["message"]


@pytest.mark.asyncio
async def test_non_streaming_failure_mid_generation_still_falls_back(fleet_client: Any) -> None:
    client, _ = fleet_client
    resp = await client.post("/v1/chat/completions", json=_chat("flaky-first", max_tokens=10))
    assert resp.status_code == 200
    assert resp.headers["x-freshet-backend"] == "good"
    assert resp.json()["usage"]["completion_tokens"] == 10


@pytest.mark.asyncio
async def test_backends_report_and_usage(fleet_client: Any) -> None:
    client, runtime = fleet_client
    good = runtime.fleet.get("good")
    assert isinstance(good, DeterministicBackend)
    before = good.served
    resp = await client.post("/v1/completions", json={"model": "m-good", "prompt": "a b c"})
    body = resp.json()
    usage = body["usage"]
    assert (usage["completion_tokens"], usage["prompt_tokens"], usage["total_tokens"]) == (
        16,
        3,
        19,
    )
    assert good.served == before + 1
    listing = (await client.get("/freshet/backends")).json()
    assert [b["id"] for b in listing] == ["broken", "flaky", "small", "good"]


@pytest.mark.asyncio
async def test_closing_a_stream_after_its_opening_chunk_closes_the_backend_stream() -> None:
    """A client that leaves closes the stream's driver (which took the opening chunk from
    the dispatcher); the backend's own iterator must close too, not whenever the garbage
    collector gets to it (a twin would keep generating), and the request is recorded once."""
    from gateway import protocol as p
    from gateway.backend import Chunk
    from gateway.flow.streaming import drive
    from gateway.outcome import Outcome

    closed = []
    finalized: list[Outcome] = []

    async def backend() -> AsyncIterator[Chunk]:
        try:
            for i in range(100):
                yield Chunk(text=str(i))
        finally:
            closed.append(True)

    def finalize(outcome: Outcome) -> p.Usage:
        finalized.append(outcome)
        return p.Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)

    rest = backend()
    first = await anext(rest)
    keep_alive = rest  # a reference elsewhere (as a twin's ASIC holds it) defeats refcounting
    outcome = Outcome()
    stream = drive(rest, outcome, finalize, first)
    assert await anext(stream) is first
    await anext(stream)
    await stream.aclose()
    assert closed == [True]
    assert keep_alive is rest
    assert finalized == [outcome]
    assert outcome.client_disconnected
    assert outcome.chunks == 2  # the opening chunk is counted like the others
