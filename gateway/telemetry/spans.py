"""The spans of a finished request, with GenAI semantic-convention attributes and
Freshet's own under ``freshet.*``: the server span ``{operation} {model}``, a ``route``
span per routing decision and a ``backend {id}`` span per backend tried."""

from __future__ import annotations

import msgspec
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.backend import GenerationRequest
from gateway.outcome import Outcome, UsageRecord
from gateway.routing import Decision
from gateway.telemetry.trace import BackendCall, RequestTrace, RouteStep

Attributes = dict[str, AttributeValue]
_NS = 1_000_000_000
# What a client wrote is kept in the recent traces (and exported): each piece bounded, so
# that requests refused or not cannot make the trace store grow past its count of traces.
# The edge refuses longer model names already; this holds whatever a plugin lets through.
MAX_CLIENT_VALUE = 256
# Captured prompts and completions (opt-in), unless OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT
# says otherwise.
MAX_CONTENT = 64 * 1024
_encode = msgspec.json.Encoder().encode
UNSET = Status(StatusCode.UNSET)  # immutable, shared


class SpanFactory:
    """Builds the finished spans of a :class:`RequestTrace` (only for sampled traces)."""

    def __init__(
        self,
        resource: Resource,
        scope: InstrumentationScope,
        backend_types: dict[str, str],
        capture_content: bool,
        max_value_length: int | None,
    ) -> None:
        self._resource = resource
        self._scope = scope
        self._types = backend_types
        self._capture = capture_content
        self._max_len = MAX_CONTENT if max_value_length is None else max_value_length

    def spans(self, t: RequestTrace) -> list[ReadableSpan]:
        t.close_calls(t.end_ns)
        out = [self._route(t, step) for step in t.routes]
        out.extend(self._backend(t, call) for call in t.calls)
        out.append(self._server(t))
        return out

    def _span(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        start_ns: int,
        end_ns: int,
        status: Status,
        events: tuple[Event, ...] = (),
    ) -> ReadableSpan:
        return ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=events,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=max(start_ns, end_ns),
            instrumentation_scope=self._scope,
        )

    def _server(self, t: RequestTrace) -> ReadableSpan:
        a: Attributes = {
            "gen_ai.operation.name": t.operation,
            "gen_ai.provider.name": "freshet",
            "freshet.request.id": t.request_id,
            "http.response.status_code": t.http_status,
        }
        host, port = t.server
        a["server.address"] = host[:MAX_CLIENT_VALUE]
        if port is not None:
            a["server.port"] = port
        model = t.model[:MAX_CLIENT_VALUE] if t.model is not None else None
        if model is not None:
            a["gen_ai.request.model"] = model
        _request_params(a, t.gen)
        if t.routes and t.routes[-1].decision is not None:
            _route_summary(a, t.routes[-1].decision)
        record, outcome = t.record, t.outcome
        events: tuple[Event, ...] = ()
        if record is not None:
            a["gen_ai.response.id"] = t.response_id
            a["gen_ai.response.model"] = _served_name(record)
            a["gen_ai.usage.input_tokens"] = record.prompt_tokens
            a["gen_ai.usage.output_tokens"] = record.completion_tokens
            # OpenTelemetry GenAI (experimental): parts of input_tokens, when reported.
            if record.cached_prompt_tokens:
                a["gen_ai.usage.cache_read.input_tokens"] = record.cached_prompt_tokens
            if record.cache_write_tokens:
                a["gen_ai.usage.cache_creation.input_tokens"] = record.cache_write_tokens
            if record.reasoning_tokens:
                a["freshet.usage.reasoning_tokens"] = record.reasoning_tokens
            self._usage(a, record)
            a["freshet.status"] = record.status
            if record.fallbacks:
                a["freshet.fallbacks"] = record.fallbacks
            if record.group is not None:
                a["freshet.group"] = record.group
            if record.key is not None:
                a["freshet.key"] = record.key  # the key's name, never its secret
            if record.ttft_s is not None:
                a["gen_ai.server.time_to_first_token"] = record.ttft_s
                at = int((record.ts + record.ttft_s) * _NS)
                events = (Event("first_token", {"freshet.ttft_s": record.ttft_s}, at),)
        if outcome is not None and outcome.finish_reason is not None:
            a["gen_ai.response.finish_reasons"] = (outcome.finish_reason,)
        if self._capture:
            self._content(a, t.gen, outcome)
        status = UNSET
        if t.error_type is not None:
            a["error.type"] = t.error_type
            status = Status(StatusCode.ERROR, t.error_type)
        name = f"{t.operation} {model}" if model else t.operation
        return self._span(
            name, t.context, t.parent, SpanKind.SERVER, a, t.start_ns, t.end_ns, status, events
        )

    def _usage(self, a: Attributes, record: UsageRecord) -> None:
        a["freshet.backend.id"] = record.backend
        a["freshet.backend.kind"] = record.backend_kind
        if record.knowledge_cutoff is not None:
            a["freshet.knowledge_cutoff"] = record.knowledge_cutoff
        if record.joules is not None:
            a["freshet.energy_joules"] = record.joules
        if record.energy_source is not None:
            a["freshet.energy_source"] = record.energy_source
        a["freshet.cost_usd"] = record.usd_total

    def _route(self, t: RequestTrace, step: RouteStep) -> ReadableSpan:
        a: Attributes = {}
        status = UNSET
        if step.decision is not None:
            _route_details(a, step.decision)
            a["freshet.route.eligible"] = tuple(
                f"{c.deployment.backend_id} ${c.quote.usd_total:.3g}"
                if c.quote
                else c.deployment.backend_id
                for c in step.decision.ordered
            )
        if step.error is not None:
            kind = _error_type(step.error)
            a["error.type"] = kind
            status = Status(StatusCode.ERROR, str(step.error)[:500])
        return self._span(
            "route", t.child(step.span_id), t.context, SpanKind.INTERNAL, a,
            step.start_ns, step.end_ns, status,
        )  # fmt: skip

    def _backend(self, t: RequestTrace, call: BackendCall) -> ReadableSpan:
        dep = call.deployment
        backend_type = self._types.get(dep.backend_id, "unknown")
        a: Attributes = {
            "gen_ai.operation.name": t.operation,
            "gen_ai.provider.name": backend_type,
            "gen_ai.request.model": dep.name,
            "freshet.backend.id": dep.backend_id,
        }
        status = UNSET
        record = t.record
        if call.error is not None:
            a["error.type"] = str(call.error.status) if call.error.status else "abandoned"
            status = Status(StatusCode.ERROR, call.error.error[:500])
        elif record is not None:
            usage = t.outcome.usage if t.outcome is not None else None
            if usage is not None and usage.time_to_first_token_s is not None:
                a["freshet.backend.time_to_first_token_s"] = usage.time_to_first_token_s
            if record.error_code is not None:
                a["error.type"] = record.error_code
                status = Status(StatusCode.ERROR, record.error_code)
        return self._span(
            f"backend {dep.backend_id}", t.child(call.span_id), t.context, SpanKind.CLIENT, a,
            call.start_ns, call.end_ns or t.end_ns, status,
        )  # fmt: skip

    def _content(self, a: Attributes, gen: GenerationRequest | None, out: Outcome | None) -> None:
        """Opt-in (``FRESHET_CAPTURE_CONTENT``): messages in the GenAI conventions' JSON shape."""
        if gen is not None:
            if gen.prompt is not None:
                messages = [{"role": "user", "parts": [{"type": "text", "content": gen.prompt}]}]
            else:
                messages = [
                    {"role": m.role, "parts": [{"type": "text", "content": m.content}]}
                    for m in gen.messages
                ]
            a["gen_ai.input.messages"] = self._clip(_encode(messages).decode())
        if out is not None and out.text_parts:
            reply = {
                "role": "assistant",
                "parts": [{"type": "text", "content": out.text}],
                "finish_reason": out.finish_reason or "error",
            }
            a["gen_ai.output.messages"] = self._clip(_encode([reply]).decode())

    def _clip(self, text: str) -> str:
        return text[: self._max_len]


def _served_name(record: UsageRecord) -> str:
    return f"{record.model}:{record.adapter}" if record.adapter else record.model


def _request_params(a: Attributes, gen: GenerationRequest | None) -> None:
    if gen is None:
        return
    if gen.max_tokens is not None:
        a["gen_ai.request.max_tokens"] = gen.max_tokens
    if gen.temperature is not None:
        a["gen_ai.request.temperature"] = gen.temperature
    if gen.top_p is not None:
        a["gen_ai.request.top_p"] = gen.top_p
    if gen.seed is not None:
        a["gen_ai.request.seed"] = gen.seed


def _route_summary(a: Attributes, decision: Decision) -> None:
    """The route on the server span: policy, need, chosen quote, dropped with reasons."""
    a["freshet.route.policy"] = decision.router
    a["freshet.freshness.need"] = decision.need.describe()
    quote = decision.ordered[0].quote
    if quote is not None:
        a["freshet.route.quote_usd"] = quote.usd_total
    a["freshet.route.dropped"] = tuple(
        f"{c.deployment.backend_id}: {c.dropped}" for c in decision.dropped
    )


def _route_details(a: Attributes, decision: Decision) -> None:
    """The ``route`` span: the summary and the rest of the decision."""
    _route_summary(a, decision)
    a["freshet.route.cost_basis"] = decision.policy
    a["freshet.route.candidates"] = len(decision.ordered) + len(decision.dropped)
    chosen = decision.ordered[0]
    a["freshet.route.chosen"] = chosen.deployment.backend_id
    if chosen.quote is not None:
        a["freshet.route.quote_joules"] = chosen.quote.joules
        a["freshet.route.quote_ttft_s"] = chosen.quote.ttft_s


def _error_type(error: BaseException) -> str:
    code = getattr(error, "code", None)
    kind = getattr(error, "type", None)
    return str(code or kind or type(error).__name__)
