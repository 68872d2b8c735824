"""One request's trace, gathered cheaply while the request runs.

On the request path only ids, timestamps and references to objects the request already
has (its routing decision, usage record, outcome) are kept; :mod:`gateway.telemetry.spans`
turns them into spans once the request has ended.
"""

from __future__ import annotations

from opentelemetry.trace import SpanContext

from gateway.backend import Deployment, GenerationRequest
from gateway.outcome import Attempt, Outcome, UsageRecord
from gateway.routing import Decision


class RouteStep:
    """One routing decision (a non-streaming request that falls back routes again)."""

    __slots__ = ("decision", "end_ns", "error", "span_id", "start_ns")

    def __init__(self, span_id: int, start_ns: int) -> None:
        self.span_id = span_id
        self.start_ns = start_ns
        self.end_ns = start_ns
        self.decision: Decision | None = None
        self.error: BaseException | None = None


class BackendCall:
    """One backend tried: from just before it is called to the end of its stream.

    ``attempts`` is the dispatcher's list of failures for the same dispatch; this call
    failed before its first chunk exactly when the list has an entry at ``index``.
    """

    __slots__ = ("attempts", "deployment", "end_ns", "error", "index", "span_id", "start_ns")

    def __init__(
        self, deployment: Deployment, span_id: int, start_ns: int, attempts: list[Attempt]
    ) -> None:
        self.deployment = deployment
        self.span_id = span_id
        self.start_ns = start_ns
        self.attempts = attempts
        self.index = len(attempts)
        self.end_ns: int | None = None
        self.error: Attempt | None = None

    def failure(self) -> Attempt | None:
        return self.attempts[self.index] if len(self.attempts) > self.index else None


class RequestTrace:
    """What one request's spans and metrics are made of."""

    __slots__ = (
        "calls",
        "context",
        "context_token",
        "end_ns",
        "error_type",
        "gen",
        "http_status",
        "model",
        "operation",
        "outcome",
        "parent",
        "record",
        "record_ns",
        "request_id",
        "routes",
        "sampled",
        "server",
        "start_ns",
        "waiting",
    )

    def __init__(
        self,
        request_id: str,
        operation: str,
        start_ns: int,
        context: SpanContext,
        parent: SpanContext | None,
        server: tuple[str, int | None],
    ) -> None:
        self.request_id = request_id
        self.operation = operation
        self.start_ns = start_ns
        self.context = context  # the server span's
        self.parent = parent  # the client's span, from its traceparent
        self.sampled = context.trace_flags.sampled
        self.server = server
        self.model: str | None = None
        self.waiting = False  # on a backend's first byte: the loop has nothing to do for it
        self.gen: GenerationRequest | None = None
        self.routes: list[RouteStep] = []
        self.calls: list[BackendCall] = []
        self.record: UsageRecord | None = None
        self.outcome: Outcome | None = None
        self.record_ns = 0
        self.end_ns = 0
        self.http_status = 0
        self.error_type: str | None = None
        self.context_token: object | None = None

    @property
    def response_id(self) -> str:
        # The same ids the OpenAI controllers give their responses.
        prefix = "chatcmpl" if self.operation == "chat" else "cmpl"
        return f"{prefix}-{self.request_id[4:]}"

    def child(self, span_id: int) -> SpanContext:
        return SpanContext(
            self.context.trace_id,
            span_id,
            is_remote=False,
            trace_flags=self.context.trace_flags,
            trace_state=self.context.trace_state,
        )

    def end_calls(self, now_ns: int, failed_only: bool) -> None:
        for call in self.calls:
            if call.end_ns is None and (not failed_only or call.failure() is not None):
                call.end_ns = now_ns

    def close_calls(self, now_ns: int) -> None:
        """Say how each backend call ended: served the request, failed before its first
        chunk, or abandoned (a non-streaming request retried elsewhere, or no record)."""
        for call in self.calls:
            call.error = call.failure()
            served = (
                call.error is None
                and self.record is not None
                and call is self.calls[-1]
                and call.deployment.backend_id == self.record.backend
            )
            if call.end_ns is None:
                call.end_ns = self.record_ns if served else now_ns
            if not served and call.error is None:
                call.error = ABANDONED


ABANDONED = Attempt(
    backend_id="",
    error="did not serve the request (retried elsewhere, or the request ended)",
    status=0,
)
