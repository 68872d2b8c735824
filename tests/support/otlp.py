"""A real OTLP/HTTP receiver on 127.0.0.1: decodes the protobuf export requests the
gateway's exporters send to ``/v1/traces`` and ``/v1/metrics`` and keeps what they carry."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

T = TypeVar("T")


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    pairs: list[KeyValue] = list(kvs)
    return {kv.key: value(kv.value) for kv in pairs}


class ReceivedSpan:
    def __init__(self, span: Span, resource: dict[str, Any], scope: str) -> None:
        self.raw = span
        self.name = span.name
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_span_id = span.parent_span_id.hex() or None
        self.kind = Span.SpanKind.Name(span.kind)
        self.start_ns = span.start_time_unix_nano
        self.end_ns = span.end_time_unix_nano
        self.attributes = attributes(span.attributes)
        self.events = [(e.name, e.time_unix_nano, attributes(e.attributes)) for e in span.events]
        self.status_code = span.status.code
        self.resource = resource
        self.scope = scope

    def __repr__(self) -> str:
        return f"<span {self.name} {self.span_id} parent={self.parent_span_id}>"


class Receiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.metrics: list[tuple[dict[str, Any], Metric]] = []
        self.requests = {"traces": 0, "metrics": 0}
        self.changed = threading.Condition()
        self.url = ""

    def record(self, path: str, body: bytes) -> bytes:
        with self.changed:
            if path == "/v1/traces":
                self.requests["traces"] += 1
                traces = ExportTraceServiceRequest.FromString(body)
                for rs in traces.resource_spans:
                    resource = attributes(rs.resource.attributes)
                    for ss in rs.scope_spans:
                        self.spans += [ReceivedSpan(s, resource, ss.scope.name) for s in ss.spans]
                reply: bytes = ExportTraceServiceResponse().SerializeToString()
            else:
                self.requests["metrics"] += 1
                metrics = ExportMetricsServiceRequest.FromString(body)
                for rm in metrics.resource_metrics:
                    resource = attributes(rm.resource.attributes)
                    for sm in rm.scope_metrics:
                        self.metrics += [(resource, m) for m in sm.metrics]
                reply = ExportMetricsServiceResponse().SerializeToString()
            self.changed.notify_all()
        return reply

    def wait_for(self, find: Callable[[Receiver], T | None], timeout: float = 15.0) -> T:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = find(self)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not received in {timeout}s: {self.spans}")
                self.changed.wait(left)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            encoding = self.headers.get("content-encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path not in ("/v1/traces", "/v1/metrics"):
                self.send_error(404)
                return
            reply = receiver.record(self.path, body)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    """``python -m tests.support.otlp PORT``: receive until SIGTERM, then print the counts
    (for benchmarks, which keep the receiver's work out of the measuring process)."""
    import signal
    import sys

    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _handler(receiver))

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    server.server_close()
    print(f"spans={len(receiver.spans)} trace_requests={receiver.requests['traces']}", flush=True)


if __name__ == "__main__":
    main()
