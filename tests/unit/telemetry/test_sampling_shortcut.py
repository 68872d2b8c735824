"""Telemetry.begin decides sampling itself for the SDK's default sampler
(``parentbased_always_on``): its server span context is the one the SDK's sampler would
give, for every incoming ``traceparent`` and ``tracestate``; other samplers are asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import propagate
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, TraceState

from gateway.settings import load_settings
from gateway.telemetry.core import Telemetry, is_default_sampler

_keys = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,8}", fullmatch=True)
_values = st.from_regex(r"[!-+\--<>-~]{1,8}", fullmatch=True)


def _telemetry(tmp_path: Path) -> Telemetry:
    path = tmp_path / "freshet.yaml"
    path.write_text(yaml.safe_dump({"backends": [
        {"id": "d", "type": "deterministic", "model": "m", "knowledge_cutoff": "unknown"}
    ]}))  # fmt: skip
    settings_ = load_settings(str(path), env={})
    return Telemetry(settings_, {}, circuit_state=lambda _: "closed", ready=lambda: True, env={})


def test_only_the_default_sampler_takes_the_shortcut() -> None:
    assert is_default_sampler(ParentBased(ALWAYS_ON))
    assert not is_default_sampler(ParentBased(ALWAYS_OFF))
    assert not is_default_sampler(ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))
    assert not is_default_sampler(ParentBased(TraceIdRatioBased(0.5)))
    assert not is_default_sampler(ALWAYS_ON)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    trace_id=st.one_of(st.just(0), st.integers(0, 2**128 - 1)),
    span_id=st.one_of(st.just(0), st.integers(0, 2**64 - 1)),
    flags=st.integers(0, 255),
    state=st.lists(st.tuples(_keys, _values), max_size=3, unique_by=lambda kv: kv[0]),
    send=st.booleans(),
)
def test_the_shortcut_decides_as_the_sdk(
    tmp_path_factory: pytest.TempPathFactory,
    trace_id: int,
    span_id: int,
    flags: int,
    state: list[tuple[str, str]],
    send: bool,
) -> None:
    telemetry = _telemetry(tmp_path_factory.mktemp("t"))
    assert is_default_sampler(telemetry.provider.sampler)  # the shortcut is what runs
    headers = {"host": "x"}
    if send:
        headers["traceparent"] = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
        if state:
            headers["tracestate"] = ",".join(f"{k}={v}" for k, v in state)
    traced = telemetry.begin("req-1", "chat", headers, ("x", None))
    try:
        made = traced.trace.context
        parent = traced.trace.parent
        incoming = propagate.extract(headers)
        sdk = telemetry.provider.sampler.should_sample(
            incoming, made.trace_id, "chat", SpanKind.SERVER
        )
        assert made.trace_flags.sampled == sdk.decision.is_sampled()
        assert made.trace_state == (sdk.trace_state or TraceState())
        if parent is None:
            assert made.trace_flags.sampled
            assert len(made.trace_state) == 0
    finally:
        telemetry.end(traced, 200, None)
