"""The upstream request's trace headers, written directly for the default propagators,
are what OpenTelemetry's ``propagate.inject`` writes, for every span context and baggage."""

from __future__ import annotations

from freshet_vllm.upstream import trace_headers
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_keys = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,10}", fullmatch=True)
_values = st.from_regex(r"[!-+\--<>-~]{1,10}", fullmatch=True)


def _injected() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@given(
    trace_id=st.one_of(st.just(0), st.integers(0, 2**128 - 1)),
    span_id=st.one_of(st.just(0), st.integers(0, 2**64 - 1)),
    flags=st.integers(0, 255),
    state=st.lists(st.tuples(_keys, _values), max_size=3, unique_by=lambda kv: kv[0]),
    bag=st.dictionaries(_keys, _values, max_size=2),
    current=st.booleans(),
)
def test_the_headers_are_inject_s(
    trace_id: int,
    span_id: int,
    flags: int,
    state: list[tuple[str, str]],
    bag: dict[str, str],
    current: bool,
) -> None:
    context = otel_context.Context()
    if current:
        span = SpanContext(
            trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags),
            trace_state=TraceState(state),
        )  # fmt: skip
        context = otel_trace.set_span_in_context(NonRecordingSpan(span), context)
    for key, value in bag.items():
        context = baggage.set_baggage(key, value, context)
    token = otel_context.attach(context)
    try:
        assert trace_headers() == _injected()
    finally:
        otel_context.detach(token)


def test_another_propagator_is_asked_itself() -> None:
    """A deployment that sets its own propagators (OTEL_PROPAGATORS) gets theirs."""
    default = propagate.get_global_textmap()
    span = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1))
    token = otel_context.attach(otel_trace.set_span_in_context(NonRecordingSpan(span)))
    try:
        propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
        assert (
            trace_headers()
            == _injected()
            == {"traceparent": "00-00000000000000000000000000000001-0000000000000002-01"}
        )
        propagate.set_global_textmap(CompositePropagator([]))
        assert trace_headers() == {}
    finally:
        propagate.set_global_textmap(default)
        otel_context.detach(token)
