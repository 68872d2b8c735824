"""Latency under load follows the queue; a full queue refuses; cancellation frees the stream."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from asic_sim_helpers import completion, timed
from freshet_asic_sim import AsicSimBackend

from gateway.plugin_api import Chunk, RateLimited

SERVICE_S = 1000 / 100_000 + 1000 / 16_000  # prefill + decode of a 1k/1k request: 72.5 ms


async def admitted(tasks: list[asyncio.Task[Any]]) -> None:
    """Let every new task run its first step: a stream admits its request before it first
    waits, so after one turn of the loop every request is in the card's queue."""
    assert not any(task.done() for task in tasks)
    await asyncio.sleep(0)


def late_by(measured: float, expected: float) -> float:
    assert measured >= expected, "delivered before its scheduled time"
    return measured - expected


@pytest.mark.asyncio
async def test_twenty_requests_on_two_streams_follow_the_queue(
    make_backend: Callable[..., AsicSimBackend],
) -> None:
    """The k-th request (1-based, in arrival order) ends ceil(k/2) service times after its
    stream took its first request of the burst, on the simulated clock and, scaled, on the
    wall clock; the 21st finds 2 running and 18 waiting (queue_limit 18) and is refused
    with 429.

    Each stream's chain starts when its first request arrives (requests 1 and 2, a few
    microseconds apart), so the closed form is exact on the simulated clock. On the wall
    clock nothing is ever early, and lateness is event-loop jitter: the median delivery is
    within a tenth of a service time and nine in ten within a quarter (a loaded machine may
    stall the odd one for longer).
    time_scale 2 (a 145 ms service time) keeps the burst well inside the first round even
    when other processes crowd the CPU.
    """
    scale = 2.0
    backend = make_backend(cards=2, queue_limit=18, time_scale=scale)
    await backend.start()
    tasks = [asyncio.create_task(timed(backend.stream(completion(1000, 1000)))) for _ in range(20)]
    await admitted(tasks)
    assert backend.model.counts(backend.model.now) == (2, 18)
    status = await backend.status()
    assert (status.running, status.waiting) == (2, 18)

    with pytest.raises(RateLimited) as refused:
        await anext(backend.stream(completion(1000, 1000)))
    assert refused.value.status == 429
    # The first waiting request starts when a stream frees: within one service time.
    assert 0 < refused.value.retry_after_s <= SERVICE_S * scale
    assert "Retry-After" in refused.value.headers()

    results = await asyncio.gather(*tasks)
    runs = []
    for received in results:
        last_at, final = received[-1]
        first_at = next(t for t, c in received if c.text)
        assert final.usage is not None
        runs.append((final.usage.timings, first_at, last_at))
    runs.sort(key=lambda run: run[0]["arrival_s"])
    chain_starts = [runs[0][0]["arrival_s"], runs[1][0]["arrival_s"]]
    # The closed form needs the whole burst in before the first request ends.
    assert runs[-1][0]["arrival_s"] < chain_starts[0] + SERVICE_S
    first_token = 1000 / 100_000 + 1 / 16_000
    lateness = []
    for k, (timings, first_at, last_at) in enumerate(runs, start=1):
        rounds = math.ceil(k / 2)
        stream = (k - 1) % 2
        end = chain_starts[stream] + rounds * SERVICE_S
        start = end - SERVICE_S
        assert timings["stream"] == float(stream)
        assert timings["end_s"] == pytest.approx(end, abs=1e-9)
        assert timings["start_s"] == pytest.approx(start, abs=1e-9)
        assert timings["queue_s"] == pytest.approx(start - timings["arrival_s"], abs=1e-9)
        # Measured on the wall clock: at the scaled time or a little after, never before.
        lateness.append(late_by(last_at, backend.clock.wall_of(end)))
        lateness.append(late_by(first_at, backend.clock.wall_of(start + first_token)))
    service_wall = SERVICE_S * scale
    assert sorted(lateness)[len(lateness) // 2] < 0.1 * service_wall
    assert sum(late < 0.25 * service_wall for late in lateness) >= 0.9 * len(lateness)
    assert (await backend.status()).running == 0


@pytest.mark.asyncio
async def test_cancelled_requests_release_their_stream(
    make_backend: Callable[..., AsicSimBackend],
) -> None:
    """A running request whose client goes away stops using the card at once, and a waiting
    one that goes away never uses it: the requests behind both move up."""
    backend = make_backend(time_scale=4.0)  # A decodes for 250 ms of wall time
    await backend.start()
    running = backend.stream(completion(1000, 1000))
    first: Chunk = await anext(running)  # A is decoding
    assert first.text
    leaving = backend.stream(completion(1000, 1000))
    leaving_task = asyncio.create_task(anext(leaving))  # B waits behind A
    last = asyncio.create_task(timed(backend.stream(completion(1000, 1000))))  # C behind B
    await admitted([leaving_task, last])
    assert backend.model.counts(backend.model.now) == (1, 2)

    leaving_task.cancel()  # B's client goes away while it waits
    with pytest.raises(asyncio.CancelledError):
        await leaving_task
    await leaving.aclose()
    cancelled_at = backend.clock.now()
    await running.aclose()  # A's client goes away mid-answer

    received = await last
    usage = received[-1][1].usage
    assert usage is not None
    # C starts when A was cancelled, not after A's full answer and B's.
    assert usage.timings["start_s"] == pytest.approx(cancelled_at, abs=0.1 * SERVICE_S)
    assert usage.timings["queue_s"] < SERVICE_S
    assert usage.completion_tokens == 1000
    status = await backend.status()
    assert (status.running, status.waiting) == (0, 0)
