"""Telemetry in-process: a request's spans from the hooks the request path calls, the
in-memory store, the protobuf writer against the SDK's encoder, metrics and their OTLP
form, and an exporter that is down."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.traces import server_address
from gateway.backend import BackendUsage, Deployment, GenerationRequest, Message
from gateway.cost import Quote
from gateway.errors import BackendError
from gateway.outcome import Attempt, Outcome, UsageRecord
from gateway.routing import Candidate, Decision, Need
from gateway.settings import load_settings
from gateway.telemetry.core import Telemetry
from gateway.telemetry.export import SPAN_LOGGERS, GuardedSpanExporter, Health, quiet, wanted
from gateway.telemetry.otlp_metrics import MetricsExport
from gateway.telemetry.store import RecentTraces
from gateway.telemetry.trace import RequestTrace
from gateway.telemetry.wire import TraceWriter

CLIENT_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def _telemetry(tmp_path: Path, **env: str) -> Telemetry:
    config = {
        "backends": [
            {
                "id": "cheap",
                "type": "deterministic",
                "model": "m",
                "knowledge_cutoff": "2024-01-01",
            },
            {"id": "good", "type": "deterministic", "model": "m", "knowledge_cutoff": "2025-01-01"},
            {"id": "old", "type": "deterministic", "model": "m", "knowledge_cutoff": "2022-01-01"},
        ],
        "groups": {"auto": ["cheap", "good", "old"]},
    }
    path = tmp_path / "freshet.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(str(path), env=env)
    return Telemetry(settings, {}, circuit_state=lambda _: "closed", ready=lambda: True, env=env)


def _deployment(backend_id: str, cutoff: str) -> Deployment:
    return Deployment(
        backend_id=backend_id,
        model="m",
        knowledge_cutoff=dt.date.fromisoformat(cutoff),
        max_context=4096,
    )


def _decision() -> Decision:
    quote = Quote(joules=2.0, usd_energy=1e-6, usd_capex=2e-6, usd_list=0.0, ttft_s=0.01)
    return Decision(
        ordered=[
            Candidate(deployment=_deployment("cheap", "2024-01-01"), quote=quote, score=3e-6),
            Candidate(deployment=_deployment("good", "2025-01-01"), quote=quote, score=4e-6),
        ],
        dropped=[
            Candidate(
                deployment=_deployment("old", "2022-01-01"), dropped="freshness(cutoff 2022-01-01)"
            )
        ],
        need=Need(min_cutoff=dt.date(2023, 6, 1), source="body"),
        policy="full",
        router="cheapest-fresh",
    )


def _record(request_id: str, arrived: float) -> UsageRecord:
    return UsageRecord(
        request_id=request_id, ts=arrived, key=None, group="auto", requested_model="auto",
        backend="good", backend_kind="cpu", model="m", adapter=None,
        knowledge_cutoff="2025-01-01", operation="chat", stream=True, status="ok",
        error_code=None, prompt_tokens=7, completion_tokens=3, ttft_s=0.002, duration_s=0.004,
        joules=1.25, energy_source="model", joules_input=0.25, joules_output=1.0,
        usd_energy=1e-6, usd_capex=2e-6, usd_list=0.0, usd_input=1e-6, usd_output=2e-6,
        usd_total=3e-6, fallbacks=1,
    )  # fmt: skip


def _run_request(telemetry: Telemetry, headers: dict[str, str]) -> RequestTrace:
    """What the middleware, service and accounting call for one streamed chat that falls
    back from a failing backend to a good one."""

    async def flow() -> RequestTrace:
        traced = telemetry.begin("req_0123456789abcdef01234567", "chat", headers, ("gw", 8400))
        trace = traced.trace
        traced.requested("auto")
        gen = GenerationRequest(
            request_id=trace.request_id,
            operation="chat",
            model="auto",
            messages=[Message(role="user", content="Tell me about rivers")],
            max_tokens=3,
            temperature=0.5,
            seed=7,
        )

        traced.routing(gen)
        decision = _decision()
        traced.routed(decision, None)
        attempts: list[Attempt] = []
        traced.attempting(decision.ordered[0].deployment, attempts)
        attempts.append(Attempt(backend_id="cheap", error="backend cheap failed", status=502))
        traced.attempting(decision.ordered[1].deployment, attempts)
        outcome = Outcome(
            text_parts=["the", " river", " rises"],
            finish_reason="length",
            usage=BackendUsage(prompt_tokens=7, completion_tokens=3, time_to_first_token_s=0.001),
        )
        traced.recorded(_record(trace.request_id, time.time()), outcome)
        telemetry.end(traced, 200, None)
        return trace

    return asyncio.run(flow())


def test_a_request_becomes_server_route_and_backend_spans(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    trace = _run_request(telemetry, {"traceparent": f"00-{CLIENT_TRACE:032x}-00f067aa0ba902b7-01"})
    assert telemetry.active == set()
    view = telemetry.recent_trace(f"{CLIENT_TRACE:032x}")
    assert view is not None
    spans = {s.name: s for s in view.spans}
    assert set(spans) == {"chat auto", "route", "backend cheap", "backend good"}
    server = spans["chat auto"]
    assert server.parent_span_id == "00f067aa0ba902b7"
    assert server.kind == "server"
    a = server.attributes
    assert a["gen_ai.request.model"] == "auto"
    assert a["gen_ai.response.model"] == "m"
    assert a["gen_ai.response.id"] == "chatcmpl-0123456789abcdef01234567"
    assert a["gen_ai.response.finish_reasons"] == ("length",)
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.request.seed"] == 7
    assert "gen_ai.request.top_p" not in a  # not set by the client: not recorded
    assert a["server.address"] == "gw"
    assert a["freshet.route.dropped"] == ("old: freshness(cutoff 2022-01-01)",)
    assert a["freshet.freshness.need"] == ">= 2023-06-01 (body)"
    assert a["freshet.route.quote_usd"] == pytest.approx(3e-6)
    assert a["freshet.energy_joules"] == 1.25
    assert a["freshet.fallbacks"] == 1
    assert "gen_ai.input.messages" not in a
    assert "gen_ai.output.messages" not in a
    assert [e.name for e in server.events] == ["first_token"]
    for name in ("route", "backend cheap", "backend good"):
        assert spans[name].parent_span_id == server.span_id
    failed = spans["backend cheap"]
    assert failed.status == "error"
    assert failed.status_message == "backend cheap failed"
    assert failed.attributes["error.type"] == "502"
    # The failed call ends when the next one starts.
    assert failed.start_ms + failed.duration_ms <= spans["backend good"].start_ms + 1e-6
    assert spans["backend good"].status == "unset"
    assert trace.context.trace_id == CLIENT_TRACE


def test_content_only_when_the_operator_opts_in(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path, FRESHET_CAPTURE_CONTENT="true")
    trace = _run_request(telemetry, {})
    view = telemetry.recent_trace(f"{trace.context.trace_id:032x}")
    assert view is not None
    server = next(s for s in view.spans if s.kind == "server")
    assert server.parent_span_id is None  # a new trace
    messages = json.loads(server.attributes["gen_ai.input.messages"])
    assert messages == [
        {"role": "user", "parts": [{"type": "text", "content": "Tell me about rivers"}]}
    ]
    (reply,) = json.loads(server.attributes["gen_ai.output.messages"])
    assert reply["parts"][0]["content"] == "the river rises"
    assert reply["finish_reason"] == "length"


def test_tracing_off_keeps_metrics_and_no_spans(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path, OTEL_SDK_DISABLED="true")
    _run_request(telemetry, {"traceparent": f"00-{CLIENT_TRACE:032x}-00f067aa0ba902b7-01"})
    assert telemetry.recent_traces(10) == []
    text = generate_latest(telemetry.metrics.registry).decode()
    tokens = {
        s.labels["gen_ai_token_type"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "gen_ai_client_token_usage_sum"
    }
    assert tokens == {"input": 7.0, "output": 3.0}


def test_sampled_out_requests_make_no_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # read by the SDK's provider
    telemetry = _telemetry(tmp_path)
    _run_request(telemetry, {})
    assert telemetry.recent_traces(10) == []


def _span(name: str, trace_id: int, span_id: int, **kw: Any) -> ReadableSpan:
    return ReadableSpan(
        name, SpanContext(trace_id, span_id, False, TraceFlags(1)), start_time=1, end_time=2, **kw
    )


def test_recent_traces_are_bounded_newest_first() -> None:
    store = RecentTraces(keep=3, max_spans=2)
    for trace_id in range(1, 6):
        store.keep_spans([_span(f"t{trace_id}", trace_id, s) for s in range(1, 4)])
    assert [s.trace_id for s in store.summaries(10)] == [f"{t:032x}" for t in (5, 4, 3)]
    view = store.trace(f"{5:032x}")
    assert view is not None
    assert len(view.spans) == 2  # at most max_spans per trace
    assert store.trace(f"{1:032x}") is None  # forgotten
    assert store.trace("not hex") is None
    assert store.summaries(1)[0].trace_id == f"{5:032x}"


def test_writer_matches_the_sdk_encoder() -> None:
    resource = Resource.create({"service.name": "freshet"})
    scope = InstrumentationScope("freshet", "1.0")
    parent = SpanContext(CLIENT_TRACE, 0x1234, True, TraceFlags(1))
    context = SpanContext(CLIENT_TRACE, 0xB7AD6B7169203331, False, TraceFlags(1),
                          TraceState([("vendor", "abc")]))  # fmt: skip
    attributes = {
        "s": "x", "empty": "", "b": True, "f": False, "i": -5, "big": 2**40, "d": 1.25,
        "strings": ("a", "b"), "doubles": (1.5, 2.5), "none": (), "long": "é" * 100,
        "freshet.request.id": "req_1",
    }  # fmt: skip
    spans = [
        ReadableSpan("chat auto", context, parent, resource, attributes, kind=SpanKind.SERVER,
                     events=[Event("first_token", {"t": 0.1}, 12345)],
                     status=Status(StatusCode.ERROR, "boom"), start_time=1, end_time=2,
                     instrumentation_scope=scope),
        ReadableSpan("route", SpanContext(CLIENT_TRACE, 7, False, TraceFlags(1)), context,
                     resource, {"x": 1}, links=[Link(parent, {"k": "v"})], start_time=3,
                     end_time=4, instrumentation_scope=scope),
        ReadableSpan("other", SpanContext(CLIENT_TRACE, 8, False, TraceFlags(1)), None,
                     resource, None, kind=SpanKind.CLIENT, start_time=5, end_time=6,
                     instrumentation_scope=InstrumentationScope("plugin")),
    ]  # fmt: skip
    writer = TraceWriter()
    for _ in range(2):  # the second time from its caches
        written = ExportTraceServiceRequest.FromString(writer.request(spans))
        assert written == encode_spans(spans)


def test_metrics_go_out_over_otlp_under_their_opentelemetry_names(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    _run_request(telemetry, {})
    export = MetricsExport(telemetry.metrics.registry, telemetry.resource, telemetry.scope, 60)
    data = export.collect()
    (resource_metrics,) = data.resource_metrics
    metrics = {m.name: m for m in resource_metrics.scope_metrics[0].metrics}
    tokens = metrics["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    points = {p.attributes["gen_ai.token.type"]: p for p in tokens.data.data_points}
    assert points["output"].sum == 3
    assert points["output"].count == 1
    assert sum(points["output"].bucket_counts) == 1
    assert len(points["output"].bucket_counts) == len(points["output"].explicit_bounds) + 1
    assert points["output"].attributes["freshet.backend.id"] == "good"
    energy = metrics["freshet.energy"]
    assert energy.data.is_monotonic
    assert energy.data.data_points[0].value == 1.25
    assert energy.data.data_points[0].attributes["freshet.energy_source"] == "model"


@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        ({}, False, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_METRICS_EXPORTER": "none"}, True, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}, False, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True, False),
    ],
)
def test_which_signals_are_exported(env: dict[str, str], traces: bool, metrics: bool) -> None:
    assert wanted(env, "traces") is traces
    assert wanted(env, "metrics") is metrics


def test_an_exporter_that_is_down_costs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1/traces"
    inner = OTLPSpanExporter(endpoint=closed, timeout=0.5)
    health = Health("spans", closed)
    exporter = GuardedSpanExporter(inner, health)
    undo = quiet(SPAN_LOGGERS, [health])
    spans = [_span("x", 1, 1)]
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                assert exporter.export(spans) is SpanExportResult.FAILURE
    finally:
        undo()
        exporter.shutdown()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "requests are not affected" in warnings[0].getMessage()
    assert health.failures == 3
    health.result(True)
    assert health.ok


def test_server_address() -> None:
    scope: Any = {"server": ("10.0.0.1", 8400)}
    assert server_address(scope, {"host": "gw.example:8443"}) == ("gw.example", 8443)
    assert server_address(scope, {"host": "[::1]:8400"}) == ("::1", 8400)
    assert server_address(scope, {"host": "gw"}) == ("gw", None)
    assert server_address(scope, {}) == ("10.0.0.1", 8400)


def test_a_backend_error_mid_stream_is_the_error_type(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)

    async def flow() -> None:
        traced = telemetry.begin("req_aa", "chat", {}, ("gw", None))
        outcome = Outcome(error=BackendError("backend good failed mid-stream"))
        record = msgspec_replace(_record("req_aa", time.time()), status="error")
        traced.recorded(record, outcome)
        telemetry.end(traced, 200, None)

    asyncio.run(flow())
    (row,) = telemetry.recent_traces(5)
    assert row.status == "error"
    assert row.error_type == "backend_error"


def msgspec_replace(record: UsageRecord, **changes: Any) -> UsageRecord:
    import msgspec

    return msgspec.structs.replace(record, **changes)


def test_kept_requests_build_their_spans_only_when_looked_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    telemetry = _telemetry(tmp_path)
    built: list[int] = []
    factory = telemetry.pipeline._factory
    spans = factory.spans

    def counting(trace: RequestTrace) -> list[ReadableSpan]:
        built.append(trace.context.trace_id)
        return spans(trace)

    monkeypatch.setattr(factory, "spans", counting)
    trace = _run_request(telemetry, {})
    assert built == []  # no exporter: nothing built at the request's end
    first = telemetry.recent_trace(f"{trace.context.trace_id:032x}")
    again = telemetry.recent_trace(f"{trace.context.trace_id:032x}")
    assert built == [trace.context.trace_id]  # once, when first looked at
    assert first is not None
    assert again is not None
    assert {s.name for s in first.spans} == {"chat auto", "route", "backend cheap", "backend good"}
    assert first == again
    assert [s.trace_id for s in telemetry.recent_traces(10)] == [f"{trace.context.trace_id:032x}"]


def test_a_kept_trace_that_cannot_be_built_costs_its_view_not_the_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RecentTraces(keep=3, max_spans=2)
    store.keep_spans([_span("good", 1, 1)])

    def broken() -> list[ReadableSpan]:
        raise RuntimeError("a bug")

    store.keep_request(2, broken)
    store.keep_request(3, lambda: [_span("many", 3, s) for s in range(1, 6)])
    with caplog.at_level(logging.ERROR):
        assert [s.trace_id for s in store.summaries(10)] == [f"{3:032x}", f"{1:032x}"]
    assert "could not build" in caplog.text
    view = store.trace(f"{3:032x}")
    assert view is not None
    assert len(view.spans) == 2  # max_spans holds for built spans too
    assert store.trace(f"{2:032x}") is None
