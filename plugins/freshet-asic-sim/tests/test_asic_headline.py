"""The vendor's headline figures, reproduced from the default parameters alone (DESIGN §7)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from asic_sim_helpers import completion, timed
from freshet_asic_sim import AsicSimBackend
from freshet_asic_sim.synthetic import count_tokens

# Vendor claims (data/profiles-sources.md, "Etched ASIC"): ~16-17k output tokens/s per user
# on a 1k-in/1k-out request; 200 W per card -> ~0.012 J/token; the 2,500 W / 10-card server
# (50 W host share per card) -> ~0.015 J/token.
VENDOR_TOKENS_PER_S = 16_500.0
VENDOR_CARD_J_PER_TOKEN = 0.012
VENDOR_SERVER_J_PER_TOKEN = 0.015


def within(value: float, target: float, rel: float = 0.05) -> bool:
    return abs(value - target) <= rel * target


def test_headline_figures_from_simulate(make_backend: Callable[..., AsicSimBackend]) -> None:
    """Definitions used here and in the stream test below:

    * tokens/s per user = output tokens / decode time (prefill, swap and queueing excluded),
      the rate a user sees once the answer starts;
    * card J/token = the card's joules during the decode phase / output tokens
      (= watts_active / decode rate = 200 / 16,000 = 0.0125);
    * server J/token = the same with the host's share (250 / 16,000 = 0.0156).
    """
    backend = make_backend()
    sim = backend.simulate(1000, 1000, at_time=backend.clock.now())

    assert sim.prompt_tokens == 1000
    assert sim.output_tokens == 1000
    assert sim.queue_s == 0.0
    assert within(sim.output_tokens_per_s, VENDOR_TOKENS_PER_S)
    assert within(sim.card_decode_j / sim.output_tokens, VENDOR_CARD_J_PER_TOKEN)
    server_j = (sim.card_decode_j + sim.host_decode_j) / sim.output_tokens
    assert within(server_j, VENDOR_SERVER_J_PER_TOKEN)
    # Prefill of 1k tokens at 100k tok/s, then 1k tokens at 16k tok/s.
    assert sim.prefill_s == pytest.approx(0.010)
    assert sim.decode_s == pytest.approx(0.0625)
    assert sim.ttft_s == pytest.approx(0.010 + 1 / 16_000)
    # The whole request, prefill included, on the card alone: 200 W x 72.5 ms.
    assert sim.card_active_j == pytest.approx(200 * 0.0725)
    assert sim.energy_j >= sim.card_active_j + sim.host_active_j
    # simulate() serves nothing and leaves the live card as it was.
    assert backend.model.counts(backend.clock.now()) == (0, 0)


@pytest.mark.asyncio
async def test_headline_figures_from_a_real_stream(
    make_backend: Callable[..., AsicSimBackend],
) -> None:
    """Same definitions as above, from the usage of a real stream run 100x faster
    (time_scale 0.01): the figures it reports are the simulated ones, whatever the speed."""
    backend = make_backend(time_scale=0.01)
    await backend.start()
    chunks = [c async for c in backend.stream(completion(1000, 1000))]

    text = "".join(c.text for c in chunks)
    assert count_tokens(text) == 1000  # the synthetic text has exactly max_tokens tokens
    final = chunks[-1]
    assert final.finish_reason == "length"
    usage = final.usage
    assert usage is not None
    assert usage.energy_source == "simulated"
    assert (usage.prompt_tokens, usage.completion_tokens) == (1000, 1000)
    t = usage.timings
    assert within(usage.completion_tokens / t["decode_s"], VENDOR_TOKENS_PER_S)
    assert within(t["output_tokens_per_s"], VENDOR_TOKENS_PER_S)
    assert within(t["energy_card_decode_j"] / 1000, VENDOR_CARD_J_PER_TOKEN)
    server = (t["energy_card_decode_j"] + t["energy_host_decode_j"]) / 1000
    assert within(server, VENDOR_SERVER_J_PER_TOKEN)
    # energy_joules is card + host, busy + idle share; the card-only figure is beside it.
    assert usage.energy_joules == pytest.approx(t["energy_with_host_j"])
    assert t["energy_with_host_j"] > t["energy_card_j"] >= t["energy_card_active_j"] > 0
    assert usage.time_to_first_token_s == pytest.approx(0.010 + 1 / 16_000)
    assert usage.duration_s == pytest.approx(0.0725)


@pytest.mark.asyncio
async def test_the_wall_clock_agrees_with_the_model(
    make_backend: Callable[..., AsicSimBackend],
) -> None:
    """The delivered stream itself runs at the card's rate: measured on the wall clock,
    token 0 to token 999 (999 intervals) at 16k tok/s. time_scale 8 stretches the 62.5 ms
    decode to 0.5 s so that event-loop jitter (a few ms under load) stays well inside 5 %;
    one chunk per token (coalesce off) so each token's delivery is visible."""
    scale = 8.0
    backend = make_backend(time_scale=scale, coalesce=False)
    await backend.start()
    started = time.monotonic()
    received = await timed(backend.stream(completion(1000, 1000)))

    texts = [t for t, c in received if c.text]
    assert len(texts) == 1000  # one chunk per token
    decode_s = (texts[-1] - texts[0]) / scale
    measured_rate = 999 / decode_s
    assert within(measured_rate, VENDOR_TOKENS_PER_S)
    assert within(measured_rate, 16_000)
    # Joules of the measured decode, at the card's power: the model's 0.0125 J/token.
    assert within(backend.params.watts_active * decode_s / 999, 200 / 16_000)
    # Never early: token i leaves no sooner than prefill + (i + 1) decode steps after the
    # request was sent (a lower bound: the card admitted it a moment after ``started``).
    for i, t in enumerate(texts):
        assert (t - started) / scale >= 0.010 + (i + 1) / 16_000
    usage = received[-1][1].usage
    assert usage is not None
    assert usage.timings["delivered_ttft_s"] >= (usage.time_to_first_token_s or 0)
    assert usage.timings["delivered_duration_s"] == pytest.approx(0.0725, rel=0.05)
