"""Twin mode: the deterministic backend writes the text, the card decides when it arrives."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from asic_sim_helpers import chat, timed
from freshet_asic_sim import AsicSimBackend

from gateway.builtins.deterministic import DeterministicBackend
from gateway.flow.fleet import Fleet
from gateway.plugin_api import BackendError, Chunk, GenerationRequest


def twin_fleet(
    make_fleet: Callable[[dict[str, Any]], Fleet], *, twin_tokens_per_s: float, time_scale: float
) -> Fleet:
    # The ASIC comes first: its twin is built after it, so it must resolve it in start().
    return make_fleet(
        {
            "backends": [
                {
                    "id": "asic",
                    "type": "asic-sim",
                    "knowledge_cutoff": "unknown",
                    "twin": "det",
                    "time_scale": time_scale,
                },
                {
                    "id": "det",
                    "type": "deterministic",
                    "model": "det-model",
                    "knowledge_cutoff": "2024-06-01",
                    "tokens_per_s": twin_tokens_per_s,
                },
            ],
        }
    )


def record_production(det: DeterministicBackend) -> list[tuple[float, str]]:
    """Wrap the twin's real stream to note when it produced each chunk."""
    produced: list[tuple[float, str]] = []
    original = det.stream

    async def stream(request: GenerationRequest) -> AsyncIterator[Chunk]:
        async for chunk in original(request):
            produced.append((time.monotonic(), chunk.text))
            yield chunk

    det.stream = stream  # type: ignore[method-assign]
    return produced


async def twin_text(det: DeterministicBackend, request: GenerationRequest) -> str:
    direct = msgspec.structs.replace(request, model="det-model")
    return "".join([c.text async for c in det.stream(direct)])


def parts(fleet: Fleet) -> tuple[AsicSimBackend, DeterministicBackend]:
    asic, det = fleet.get("asic"), fleet.get("det")
    assert isinstance(asic, AsicSimBackend)
    assert isinstance(det, DeterministicBackend)
    return asic, det


@pytest.mark.asyncio
async def test_slow_twin_delivery_never_precedes_production(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    """Twin at 500 tok/s, card at 16,000: the twin sets the pace, chunk by chunk."""
    fleet = twin_fleet(make_fleet, twin_tokens_per_s=500, time_scale=1.0)
    await fleet.start()
    asic, det = parts(fleet)
    assert asic.twin is det
    produced = record_production(det)
    request = chat("what is etched into the chip", 40, seed=7)

    received = await timed(asic.stream(request))
    twin_chunks = [(t, piece) for t, piece in produced if piece]
    assert len(twin_chunks) == 40

    text = "".join(c.text for _, c in received)
    assert text == await twin_text(det, request)
    assert len(text.split()) == 40
    delivered_chars = 0
    for at, chunk in received:
        delivered_chars += len(chunk.text)
        # Every twin chunk whose text is in what was delivered so far was produced by then.
        covered = 0
        for made_at, piece in twin_chunks:
            covered += len(piece)
            if covered > delivered_chars:
                break
            assert made_at <= at
    final = received[-1][1]
    assert final.finish_reason == "length"
    assert final.usage is not None
    assert final.usage.completion_tokens == 40  # the twin's own counts
    assert final.usage.prompt_tokens == det.prompt_tokens(request)
    assert final.usage.energy_source == "simulated"
    # The card's own timeline is the simulated one; the lag behind it is reported.
    # Our prompt count: 1 + (5 + 6 words) + 4 = 16 tokens; no queue.
    assert final.usage.duration_s == pytest.approx(16 / 100_000 + 40 / 16_000)
    assert final.usage.timings["twin_lag_s"] > 0.05  # 40 tokens at 500/s ~ 80 ms
    await fleet.aclose()


@pytest.mark.asyncio
async def test_fast_twin_is_held_to_the_card_schedule(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    """An instant twin, a card slowed 20x: chunks wait for the card's schedule."""
    scale = 20.0
    fleet = twin_fleet(make_fleet, twin_tokens_per_s=0, time_scale=scale)
    await fleet.start()
    asic, det = parts(fleet)
    request = chat("tell me about rivers", 200, seed=3)
    started = time.monotonic()
    received = await timed(asic.stream(request))

    assert "".join(c.text for _, c in received) == await twin_text(det, request)
    final = received[-1][1]
    assert final.usage is not None
    ttft = final.usage.time_to_first_token_s
    assert ttft is not None
    tokens = 0
    for at, chunk in received[:-1]:
        tokens += len(chunk.text.split())
        # The chunk's last token was due at ttft + (tokens - 1) decode steps.
        assert (at - started) / scale >= ttft + (tokens - 1) / 16_000
    assert (received[-1][0] - started) / scale >= final.usage.duration_s
    await fleet.aclose()


@pytest.mark.asyncio
async def test_closing_the_stream_closes_the_twin_and_frees_the_card(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    fleet = twin_fleet(make_fleet, twin_tokens_per_s=200, time_scale=1.0)
    await fleet.start()
    asic, det = parts(fleet)
    stream = asic.stream(chat("a long answer please", 100))
    first = await anext(stream)
    assert first.text
    assert det.running == 1  # the twin is still writing (100 tokens at 200/s)
    await stream.aclose()
    assert det.running == 0
    status = await asic.status()
    assert (status.running, status.waiting) == (0, 0)
    # The card is free: the next request does not queue.
    again = await timed(asic.stream(chat("short", 2)))
    usage = again[-1][1].usage
    assert usage is not None
    assert usage.timings["queue_s"] == 0.0
    await fleet.aclose()


@pytest.mark.asyncio
async def test_a_twin_failing_before_its_first_chunk_fails_before_ours(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    """So the gateway can still fall back to another backend."""
    fleet = make_fleet(
        {
            "backends": [
                {
                    "id": "asic",
                    "type": "asic-sim",
                    "knowledge_cutoff": "unknown",
                    "twin": "det",
                    "time_scale": 0.01,
                },
                {
                    "id": "det",
                    "type": "deterministic",
                    "knowledge_cutoff": "unknown",
                    "fail_before_first": True,
                },
            ],
        }
    )
    await fleet.start()
    asic, _ = parts(fleet)
    with pytest.raises(BackendError, match="configured to fail"):
        await anext(asic.stream(chat("hello", 5)))
    status = await asic.status()
    assert (status.running, status.waiting) == (0, 0)
    await fleet.aclose()
