"""The backends' performance models, against cases worked out by hand."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Mapping
from typing import Any

import pytest
from freshet_asic_sim import AsicParams, TraceEntry, replay
from freshet_asic_sim.replay import AsicSimulator
from freshet_vllm.simulate import VllmEngine, VllmSimOptions, VllmSimulator

from gateway.backend import BackendConfig, HardwareProfile
from gateway.builtins.deterministic import DeterministicBackend
from gateway.builtins.simulate import DeterministicSimulator
from gateway.errors import ConfigError, ContextLengthExceeded, RateLimited
from gateway.plugins import Plugins
from gateway.simulator import ServerPool, SimDone, SimRequest, profile_watts


def req(tag: int, at: float, prompt: int, output: int, adapter: str | None = None) -> SimRequest:
    return SimRequest(
        tag=tag, arrival_s=at, prompt_tokens=prompt, output_tokens=output, adapter=adapter
    )


def watts(idle: float, active: float, n: int = 1) -> Any:
    return profile_watts(HardwareProfile(watts_idle=idle, watts_active=active, max_concurrency=n))


def pool(**kw: Any) -> ServerPool:
    args: dict[str, Any] = dict(
        backend_id="p",
        servers=1,
        queue_limit=8,
        prefill_tokens_per_s=100.0,
        decode_tokens_per_s=10.0,
        watts=watts(10.0, 110.0),
    )
    args.update(kw)
    return ServerPool(**args)


def by_tag(done: list[SimDone]) -> dict[int, SimDone]:
    return {d.tag: d for d in done}


def test_one_server_first_come_first_served() -> None:
    """100 prompt tokens at 100/s and 10 output at 10/s: 2 s of service each; B queues."""
    p = pool()
    p.submit(req(1, 0.0, 100, 10))
    assert p.advance(0.5) == []
    p.submit(req(2, 0.5, 100, 10))
    status = p.status(0.5)
    assert (status.running, status.waiting) == (1, 1)
    done = by_tag(p.advance(10.0))
    a, b = done[1].usage, done[2].usage
    assert (done[1].end_s, done[2].end_s) == (2.0, 4.0)
    assert a.time_to_first_token_s == pytest.approx(1.1)  # prefill 1 s + one token
    assert a.duration_s == pytest.approx(2.0)
    assert b.time_to_first_token_s == pytest.approx(2.6)  # waits 1.5 s
    assert b.duration_s == pytest.approx(3.5)
    assert b.timings["queue_s"] == pytest.approx(1.5)
    assert (a.energy_joules, b.energy_joules) == (pytest.approx(220.0), pytest.approx(220.0))
    assert a.timings["energy_card_decode_j"] == pytest.approx(110.0)  # the decode second
    assert a.timings["busy_s"] == pytest.approx(2.0)
    totals = p.totals(10.0)
    assert totals.joules == pytest.approx(440.0 + 6 * 10.0)  # idle 4..10 s at 10 W
    assert totals.idle_joules == pytest.approx(60.0)
    assert totals.busy_s == pytest.approx(4.0)


def test_idle_energy_rides_with_the_next_request_that_finishes() -> None:
    p = pool()
    p.submit(req(1, 0.0, 100, 10))
    p.advance(6.0)  # done at 2 s, idle 4 s since
    p.submit(req(2, 6.0, 100, 10))
    usage = p.advance(20.0)[0].usage
    assert usage.energy_joules == pytest.approx(220.0 + 40.0)
    assert usage.timings["energy_card_active_j"] == pytest.approx(220.0)
    assert usage.timings["energy_card_idle_j"] == pytest.approx(40.0)


def test_concurrent_requests_share_the_board() -> None:
    p = pool(servers=2, watts=watts(10.0, 210.0, n=2))  # 110 W with one busy, 210 W with two
    p.submit(req(1, 0.0, 100, 10))
    p.submit(req(2, 0.0, 100, 10))
    done = by_tag(p.advance(5.0))
    assert done[1].end_s == done[2].end_s == 2.0
    assert done[1].usage.energy_joules == pytest.approx(210.0)  # 105 W each for 2 s
    assert done[1].usage.timings["busy_s"] == pytest.approx(1.0)  # half the board


def test_a_full_queue_and_a_long_prompt_are_refused_as_live() -> None:
    p = pool(queue_limit=1, max_context=150)
    p.submit(req(1, 0.0, 100, 10))
    p.submit(req(2, 0.0, 100, 10))
    with pytest.raises(RateLimited):
        p.submit(req(3, 0.1, 100, 10))
    with pytest.raises(ContextLengthExceeded):
        p.submit(req(4, 0.1, 100, 60))
    assert p.status(0.1).saturated


def engine(**options: Any) -> VllmEngine:
    return VllmEngine(
        prefill_tokens_per_s=20_000.0,
        decode_tokens_per_s=160.0,
        options=VllmSimOptions(**options),
        max_seqs=128,
        watts=profile_watts(HardwareProfile(power_curve=((0, 100.0), (1, 300.0), (2, 300.0)))),
    )


def test_vllm_one_request_prefill_then_decode() -> None:
    e = engine()
    e.submit(req(1, 0.0, 1000, 5))
    e.advance(1.0)
    [done] = e.done
    assert done.usage.time_to_first_token_s == pytest.approx(0.05)  # 1,000 / 20,000
    assert done.usage.duration_s == pytest.approx(0.05 + 4 / 160)  # four more steps
    assert done.usage.energy_joules == pytest.approx(300.0 * 0.075)
    assert done.usage.timings["energy_card_decode_j"] == pytest.approx(300.0 * 0.025)


def test_vllm_chunked_prefill_shares_steps_with_decoding() -> None:
    e = engine()
    slope = (1 / 80 - 1 / 160) / 63
    t1, t2 = 1 / 160, 1 / 160 + slope
    e.submit(req(1, 0.0, 1000, 3))
    e.submit(req(2, 0.0, 1000, 3))  # arrives while A's prompt step runs: the next step
    e.advance(1.0)
    a, b = sorted(e.done, key=lambda d: d.tag)
    assert a.usage.time_to_first_token_s == pytest.approx(0.05)
    # B's prompt goes with A's first decode step: 1/160 + 0.05 s.
    assert b.usage.time_to_first_token_s == pytest.approx(0.05 + t1 + 0.05)
    assert a.end_s == pytest.approx(0.05 + t1 + 0.05 + t2)  # then one step of two
    assert b.end_s == pytest.approx(0.05 + t1 + 0.05 + t2 + t1)


def test_vllm_waits_for_kv_cache_room() -> None:
    e = engine(kv_cache_tokens=1500)
    e.submit(req(1, 0.0, 1000, 5))
    e.submit(req(2, 0.0, 1000, 5))
    e.advance(1.0)
    a, b = sorted(e.done, key=lambda d: d.tag)
    assert b.usage.timings["queue_s"] == pytest.approx(a.end_s)  # admitted when A freed it
    assert b.usage.time_to_first_token_s == pytest.approx(a.end_s + 0.05)


def test_vllm_defaults_reproduce_the_sourced_figures() -> None:
    """H100 + Llama 3.1 8B: ~5,100 tok/s at batch 64 (MLPerf v5.1 server: 5,103) and
    ~0.11 J per output token there (ML.ENERGY v3: 0.12)."""
    sim = _vllm_simulator({})
    for i in range(64):
        sim.submit(req(i, 0.0, 1, 2001))
    done = sim.advance(1e6)
    decode_s = max(d.end_s for d in done) - max(d.usage.time_to_first_token_s or 0 for d in done)
    rate = 64 * 2000 / decode_s
    assert rate == pytest.approx(5120, rel=0.01)
    j_per_token = sum(d.usage.timings["energy_card_decode_j"] for d in done) / (64 * 2000)
    assert 0.10 < j_per_token < 0.12


def _vllm_simulator(options: Mapping[str, Any]) -> VllmSimulator:
    config = BackendConfig(
        id="gpu",
        type="vllm",
        knowledge_cutoff=dt.date(2025, 1, 1),
        params={"urls": ["http://gpu.invalid:8000"]},
    )
    backend = Plugins().backend_types()["vllm"](config, _NoFleet())
    return VllmSimulator(backend, config, options)


def _one_gpu(max_concurrency: int = 128) -> VllmSimulator:
    config = BackendConfig(
        id="gpu",
        type="vllm",
        knowledge_cutoff=dt.date(2025, 1, 1),
        params={"urls": ["http://gpu.invalid:8000"]},
        profile={"max_concurrency": max_concurrency},
    )
    return VllmSimulator(Plugins().backend_types()["vllm"](config, _NoFleet()), config, {})


def _quoted_ttft(busy_s: float | None, prompt: int) -> float:
    """The cost model's quote (freshet_energy): the committed work, the request's prompt at
    the profile's 20,000 tok/s and one decode step at 160 tok/s."""
    return (busy_s or 0.0) + prompt / 20_000 + 1 / 160


def test_vllm_quotes_the_prompts_queued_before_a_request() -> None:
    """Issue 20: a burst of long prompts is all admitted at once (running, none waiting),
    so a count of requests running and waiting saw no queue and the quote said 0.06 s for
    a first token that came seconds later. busy_s counts the prompt tokens ahead."""
    sim = _one_gpu()
    for tag in range(10):
        sim.submit(req(tag, 0.0, 8000, 2))  # 80,000 prompt tokens: 4 s at 20,000 tok/s
    sim.advance(0.5)
    status = sim.status(0.5)
    assert (status.running, status.waiting) == (10, 0)
    quoted = _quoted_ttft(status.busy_s, 1000)
    sim.submit(req(10, 0.5, 1000, 5))
    [probe] = [d for d in sim.advance(100.0) if d.tag == 10]
    actual = probe.usage.time_to_first_token_s
    assert actual is not None
    assert actual > 3.5
    assert quoted == pytest.approx(actual, rel=0.01)


def test_vllm_quotes_the_wait_for_a_sequence_slot() -> None:
    """With every sequence slot taken, a request waits for a running one to finish: the
    quote says so before any request has finished."""
    sim = _one_gpu(max_concurrency=2)
    sim.submit(req(0, 0.0, 100, 400))
    sim.submit(req(1, 0.0, 100, 200))
    sim.advance(0.1)
    status = sim.status(0.1)
    assert (status.running, status.waiting) == (2, 0)
    quoted = _quoted_ttft(status.busy_s, 100)
    sim.submit(req(2, 0.1, 100, 10))
    done = by_tag(sim.advance(100.0))
    actual = done[2].usage.time_to_first_token_s
    assert actual is not None
    assert actual > done[1].end_s - 0.1  # admitted when the shorter one finished
    assert quoted == pytest.approx(actual, rel=0.02)


def test_vllm_an_idle_engine_quotes_no_wait_and_the_busier_one_is_skipped() -> None:
    """Two servers: the next request goes to the one with fewer in flight, and the status
    is that one's (an idle server: no wait at all)."""
    config = BackendConfig(
        id="gpu",
        type="vllm",
        knowledge_cutoff=dt.date(2025, 1, 1),
        params={"urls": ["http://a.invalid:8000", "http://b.invalid:8000"]},
    )
    sim = VllmSimulator(Plugins().backend_types()["vllm"](config, _NoFleet()), config, {})
    assert sim.status(0.0).busy_s == 0.0
    sim.submit(req(0, 0.0, 8000, 100))
    sim.advance(0.1)
    assert sim.status(0.1).busy_s == 0.0  # the second server is idle
    sim.submit(req(1, 0.1, 8000, 100))
    sim.advance(0.2)
    assert (sim.status(0.2).busy_s or 0.0) > 0.0  # both busy now


def test_vllm_quotes_agree_with_the_first_tokens_through_bursts() -> None:
    """Two servers, 3,000 requests in bursts (40 a second, then 4, in turns of 200), prompts
    of a few hundred to 7,000 tokens: the quote before each request (busy_s, its prompt,
    one decode step) and its simulated first token agree to a step. A step is at most
    8,192 prompt tokens (0.41 s), and prompts that arrive later share the step of a
    request's prompt, which no quote knows: the error left."""
    rnd = random.Random(0)
    config = BackendConfig(
        id="gpu",
        type="vllm",
        knowledge_cutoff=dt.date(2025, 1, 1),
        params={"urls": ["http://a.invalid:8000", "http://b.invalid:8000"]},
    )
    sim = VllmSimulator(Plugins().backend_types()["vllm"](config, _NoFleet()), config, {})
    quoted: dict[int, float] = {}
    done: list[SimDone] = []
    at = 0.0
    for tag in range(3000):
        at += rnd.expovariate(40.0 if (tag // 200) % 2 else 4.0)
        prompt = min(7000, int(rnd.lognormvariate(7.0, 0.8)))
        output = max(1, min(400, int(rnd.expovariate(1 / 120))))
        done += sim.advance(at)
        quoted[tag] = _quoted_ttft(sim.status(at).busy_s, prompt)
        sim.submit(req(tag, at, prompt, output))
    done += sim.advance(math.inf)
    pairs = [(quoted[d.tag], d.usage.time_to_first_token_s or 0.0) for d in done]
    errors = sorted(abs(q - a) for q, a in pairs)
    assert errors[len(errors) // 2] < 0.02
    assert errors[int(0.95 * len(errors))] < 0.45
    quotes, actual = sorted(q for q, _ in pairs), sorted(a for _, a in pairs)
    p95 = int(0.95 * len(pairs))
    assert actual[p95] > 2.0  # the bursts queue: there is something to quote
    assert quotes[p95] == pytest.approx(actual[p95], rel=0.15)


def test_an_unknown_simulator_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown field `kv_cache`") as info:
        _vllm_simulator({"kv_cache": 1})
    assert info.value.key == "--sim gpu"


def _asic(**params: Any) -> tuple[AsicSimulator, AsicParams]:
    config = BackendConfig(
        id="asic", type="asic-sim", knowledge_cutoff=dt.date(2023, 12, 1), params=params
    )
    backend = Plugins().backend_types()["asic-sim"](config, _NoFleet())
    sim = AsicSimulator(backend, config, {})
    return sim, sim.params


def test_the_asic_simulator_is_the_card_model_the_live_backend_uses() -> None:
    sim, params = _asic(queue_limit=2)
    entries = [(0.0, 500, 900), (0.01, 300, 100), (0.02, 1000, 500), (0.5, 10, 10)]
    for tag, (at, prompt, output) in enumerate(entries):
        sim.submit(req(tag, at, prompt, output))
    ours = sorted(sim.advance(1e9), key=lambda d: d.tag)
    theirs = replay(
        params, [TraceEntry(at_s=a, prompt_tokens=p, output_tokens=o) for a, p, o in entries]
    )
    for mine, sim_result in zip(ours, theirs, strict=True):
        assert sim_result is not None
        assert mine.end_s == pytest.approx(sim_result.end_s)
        assert mine.usage.time_to_first_token_s == pytest.approx(sim_result.ttft_s)
        assert mine.usage.energy_joules == pytest.approx(sim_result.energy_j)


def test_the_asic_headline_figures_hold_in_replay() -> None:
    sim, _ = _asic()
    sim.submit(req(1, 0.0, 1000, 1000))
    usage = sim.advance(10.0)[0].usage
    assert 1000 / usage.timings["decode_s"] == pytest.approx(16_000)
    assert usage.timings["energy_card_decode_j"] / 1000 == pytest.approx(0.0125)


def test_a_slowed_card_replays_in_wall_seconds_as_live_measures_them() -> None:
    """time_scale 4: the live card runs 4 wall seconds per simulated second, so its
    gateway records 4x the model's times; the model (and its joules) sees arrivals / 4."""
    entries = [(0.0, 500, 900), (0.4, 300, 100), (0.8, 1000, 500)]
    plain, _ = _asic(queue_limit=8)
    slowed, _ = _asic(queue_limit=8, time_scale=4.0)
    for tag, (at, prompt, output) in enumerate(entries):
        plain.submit(req(tag, at / 4, prompt, output))
        slowed.submit(req(tag, at, prompt, output))
    base = sorted(plain.advance(1e9), key=lambda d: d.tag)
    scaled = sorted(slowed.advance(1e9), key=lambda d: d.tag)
    for b, s in zip(base, scaled, strict=True):
        assert s.end_s == pytest.approx(4 * b.end_s)
        assert s.usage.time_to_first_token_s == pytest.approx(4 * b.usage.time_to_first_token_s)
        assert s.usage.duration_s == pytest.approx(4 * (b.usage.duration_s or 0.0))
        assert s.usage.energy_joules == pytest.approx(b.usage.energy_joules)
    assert slowed.totals(40.0).joules == pytest.approx(plain.totals(10.0).joules)


def test_the_asic_refuses_as_the_live_card() -> None:
    sim, _ = _asic(queue_limit=0, max_context=2048)
    sim.submit(req(1, 0.0, 1000, 1000))
    with pytest.raises(RateLimited, match="queue_limit 0"):
        sim.submit(req(2, 0.0, 10, 10))
    with pytest.raises(ContextLengthExceeded):
        sim.submit(req(3, 0.0, 2000, 100))


def test_deterministic_keeps_its_pace_and_its_context() -> None:
    config = BackendConfig(
        id="det", type="deterministic", knowledge_cutoff=None,
        params={"tokens_per_s": 10, "max_context": 100},
    )  # fmt: skip
    sim = DeterministicSimulator(DeterministicBackend(config, _NoFleet()), config, {})
    sim.submit(req(1, 0.0, 10, 5))
    sim.submit(req(2, 0.0, 90, 50))  # only 10 tokens of room: cut there, as live
    with pytest.raises(ContextLengthExceeded):
        sim.submit(req(3, 0.0, 100, 1))
    done = by_tag(list(sim.advance(100.0)))
    assert done[1].usage.time_to_first_token_s == pytest.approx(0.1)
    assert done[1].usage.duration_s == pytest.approx(0.5)
    assert done[2].usage.completion_tokens == 10


def test_every_repository_backend_type_has_a_simulator() -> None:
    plugins = Plugins()
    assert set(plugins.backend_types()) <= set(plugins.simulators())


class _NoFleet:
    def get(self, backend_id: str) -> Any:
        raise KeyError(backend_id)
