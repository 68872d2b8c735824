"""The engine: exact timings on one backend, the live router's decisions, refusals and
fallbacks as live, usage records that the cost report reads."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway import hookimpl
from gateway.api.runtime import Runtime
from gateway.backend import GenerationRequest, Message
from gateway.builtins.deterministic import DeterministicBackend
from gateway.cost import Quote
from gateway.errors import ConfigError, FreshetError
from gateway.ledger.reports import cost_report
from gateway.ledger.sqlite import SQLiteLedger, UsageQuery
from gateway.outcome import UsageRecord
from gateway.plugins import Plugins
from gateway.protocol import Freshness
from gateway.replay import engine as engine_module
from gateway.replay.engine import Engine, RunResult
from gateway.replay.traces import TraceRequest
from gateway.routing import Decision
from gateway.settings import Settings, load_settings

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()

ASIC_AND_DET = """
backends:
  - id: asic
    type: asic-sim
    knowledge_cutoff: 2023-12-01
    decode_tokens_per_s: 100
    prefill_tokens_per_s: 1000
    queue_limit: {queue_limit}
  - id: det
    type: deterministic
    model: llama-3.1-8b
    knowledge_cutoff: 2024-06-01
    tokens_per_s: 50
    max_context: 8192
    profile: {{capex_per_hour: 1.0, watts_idle: 5, watts_active: 50, decode_tokens_per_s: 50,
               prefill_tokens_per_s: 1000}}
groups:
  auto: [asic, det]
  card: [asic]
"""


def fleet(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Settings:
    path = tmp_path / name
    path.write_text(text)
    return load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path / "data")})


def request(at: float, prompt: int, output: int, **kw: Any) -> TraceRequest:
    return TraceRequest(at=T0 + at, prompt_tokens=prompt, output_tokens=output, cls="t", **kw)


async def replay(
    tmp_path: Path, settings: Settings, requests: list[TraceRequest], **kw: Any
) -> tuple[RunResult, list[UsageRecord], SQLiteLedger]:
    ledger = SQLiteLedger(tmp_path / "replay")
    await ledger.start()
    engine = Engine(settings, Plugins(), default_model=kw.pop("model", None))
    result = await engine.run(requests, ledger, **kw)
    records, _ = await ledger.query(UsageQuery(limit=1000))
    return result, sorted(records, key=lambda r: r.ts), ledger


@pytest.mark.asyncio
async def test_one_backend_known_rates_exact_timings(tmp_path: Path) -> None:
    """A card at 1,000 prompt and 100 output tokens/s, one stream: A (100 in, 10 out) at 0 s
    runs 0.1 s of prefill and 0.1 s of decode; B at 0.05 s waits for it. Exact to the
    resolution of unix time as a float (~0.2 us)."""
    settings = fleet(tmp_path, ASIC_AND_DET.format(queue_limit=8))
    result, records, ledger = await replay(
        tmp_path, settings, [request(0.0, 100, 10), request(0.05, 100, 10)], model="card"
    )
    a, b = records
    assert a.ttft_s == pytest.approx(0.11, abs=1e-6)  # prefill + one token
    assert a.duration_s == pytest.approx(0.2, abs=1e-6)
    assert b.ttft_s == pytest.approx(0.2 + 0.1 + 0.01 - 0.05, abs=1e-6)
    assert b.duration_s == pytest.approx(0.4 - 0.05, abs=1e-6)
    assert (a.backend, a.status, a.group, a.energy_source) == ("asic", "ok", "card", "simulated")
    assert a.joules == pytest.approx((200 + 50) * 0.2)  # card + host, busy (idle: overhead)
    assert a.usd_capex == pytest.approx(0.45 / 3600 * 0.2)
    assert a.ts == pytest.approx(T0)
    stats = result.stats
    assert (stats.requests, stats.served) == (2, 2)
    assert stats.ttft.max == pytest.approx(0.26)
    await ledger.aclose()


NEEDS = [
    None,
    Freshness(min_knowledge_cutoff=dt.date(2023, 6, 1)),
    Freshness(min_knowledge_cutoff=dt.date(2024, 1, 1)),
    Freshness(min_knowledge_cutoff=dt.date(2025, 1, 1)),
]
SHAPES = [(100, 10), (1500, 400), (1900, 200), (3000, 50), (7000, 100)]


def _model(quote: Quote | None) -> Quote | None:
    """A quote as the cost model made it, before the learned correction."""
    if quote is None or quote.model_ttft_s is None or quote.model_duration_s is None:
        return quote
    return msgspec.structs.replace(
        quote, ttft_s=quote.model_ttft_s, duration_s=quote.model_duration_s
    )


@pytest.mark.asyncio
async def test_routing_decisions_equal_the_live_routers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same requests, one at a time (no load): the replay's decisions are those of the
    live gateway's Service on the same config: order, quotes and every drop reason."""
    settings = fleet(tmp_path, ASIC_AND_DET.format(queue_limit=8))
    seen: list[Decision | str] = []
    real = engine_module.decide

    def recording(*args: Any, **kwargs: Any) -> Decision:
        try:
            decision = real(*args, **kwargs)
        except FreshetError as exc:
            seen.append(type(exc).__name__)
            raise
        seen.append(decision)
        return decision

    monkeypatch.setattr(engine_module, "decide", recording)
    cases = [(need, shape) for need in NEEDS for shape in SHAPES]
    trace = [
        request(i * 1000.0, prompt, output, freshness=need)
        for i, (need, (prompt, output)) in enumerate(cases)
    ]
    await replay(tmp_path, settings, trace, model="auto")
    runtime = Runtime(settings)
    runtime.ready.set()
    service = runtime.service
    for i, (need, (prompt, output)) in enumerate(cases):
        ctx = service.context(f"r{i}", "auto", "chat", False, freshness=need)
        gen = GenerationRequest(
            request_id=f"r{i}", operation="chat", model="auto",
            messages=[Message(role="user", content="x")], max_tokens=output,
        )  # fmt: skip
        try:
            live: Decision | str = await service.decide(ctx, gen, prompt_estimate=prompt)
        except FreshetError as exc:
            live = type(exc).__name__
        replayed = seen[i]
        if isinstance(live, str) or isinstance(replayed, str):
            assert live == replayed, (need, prompt, output)
            continue
        assert isinstance(replayed, Decision)
        assert [c.deployment for c in replayed.ordered] == [c.deployment for c in live.ordered]
        # The replay's quotes carry the correction learnt from the requests it finished
        # (as a live gateway learns from its own); the cost model's figures are the same.
        assert [_model(c.quote) for c in replayed.ordered] == [
            _model(c.quote) for c in live.ordered
        ]
        assert [(c.deployment.backend_id, c.dropped) for c in replayed.dropped] == [
            (c.deployment.backend_id, c.dropped) for c in live.dropped
        ]
        assert replayed.need == live.need
    assert {type(s) for s in seen} == {Decision, str}  # both kinds of outcome were covered


@pytest.mark.asyncio
async def test_refusals_by_reason_and_fallbacks_as_live(tmp_path: Path) -> None:
    settings = fleet(tmp_path, ASIC_AND_DET.format(queue_limit=0))
    trace = [
        request(0.0, 100, 100),  # the card (cheapest)
        request(0.0, 100, 100),  # the card is busy, no queue: falls back to det
        request(1.0, 100, 10, freshness=Freshness(min_knowledge_cutoff=dt.date(2030, 1, 1))),
        request(2.0, 9500, 10),  # fits nowhere: the router says so
        request(2.5, 8500, 10),  # the router's estimate fits det; det counts and refuses
        request(3.0, 100, 100, model="card"),
        request(3.0, 100, 100, model="card"),  # the card only, busy: refused (429)
    ]
    result, records, ledger = await replay(tmp_path, settings, trace, model="auto")
    stats = result.stats
    assert stats.requests == 7
    assert stats.refused == {"freshness": 1, "context": 2, "capacity": 1, "other": 0}
    assert stats.served == 3
    fallback = next(r for r in records if r.fallbacks == 1 and r.status == "ok")
    assert fallback.backend == "det"
    assert json.loads(fallback.attempts or "[]")[0] == {
        "backend": "asic", "status": "error", "error_code": "429",
    }  # fmt: skip
    errors = [(r.backend, r.error_code, r.prompt_tokens) for r in records if r.status == "error"]
    assert errors == [("det", "context_length_exceeded", 0), ("asic", "rate_limit_exceeded", 0)]
    assert len(records) == 5  # one per request that reached a backend, as live
    by_backend = await cost_report(ledger.rows, "backend", UsageQuery())
    assert {r.value: r.requests for r in by_backend.rows} == {"asic": 3, "det": 2}
    by_hour = await cost_report(ledger.rows, "hour", UsageQuery())
    assert [r.value for r in by_hour.rows] == ["2026-01-01T00:00:00Z"]
    await ledger.aclose()


def test_a_backend_type_without_a_simulator_is_named(tmp_path: Path) -> None:
    class NoSim:
        @staticmethod
        @hookimpl
        def register_backend_types(register: Any) -> None:
            register("nosim", DeterministicBackend)

    settings = fleet(
        tmp_path,
        "backends:\n  - {id: x, type: nosim, knowledge_cutoff: 2024-01-01}\n",
    )
    plugins = Plugins()
    plugins.register(NoSim(), "nosim")
    with pytest.raises(ConfigError, match="backend type 'nosim' has no simulator") as info:
        Engine(settings, plugins)
    assert info.value.key == "backends[0].type"


@pytest.mark.asyncio
async def test_a_model_the_fleet_lacks_is_an_error(tmp_path: Path) -> None:
    settings = fleet(tmp_path, ASIC_AND_DET.format(queue_limit=8))
    with pytest.raises(Exception, match=r"asks for model 'gpt-9'.*--model"):
        await replay(tmp_path, settings, [request(0.0, 1, 1, model="gpt-9")])


@pytest.mark.asyncio
async def test_nothing_is_kept_per_request(tmp_path: Path) -> None:
    settings = fleet(tmp_path, ASIC_AND_DET.format(queue_limit=8))
    trace = [request(i * 0.5, 200, 50) for i in range(2000)]
    result, _records, ledger = await replay(tmp_path, settings, trace, model="auto")
    engine_state = msgspec.structs.asdict(result)
    assert result.stats.served == 2000
    assert len(engine_state["backends"]) == 2
    assert len(result.stats.backends["asic"].ttft.counts) < 4000  # fixed-size histograms
    await ledger.aclose()
