"""A property of the edge (issue 17): whatever bytes, headers, paths and JSON a client
sends, the answer is never a 5xx, every error has OpenAI's shape and a request id, and
``/health`` still answers afterwards. In-process, straight into the ASGI app, so that the
requests are exactly as generated (no client library tidies them first)."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.settings import load_settings
from tests.security.gateways import CONFIG, send

PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/ready",
    "/metrics",
    "/freshet/route",
    "/freshet/usage",
    "/freshet/cost/report",
    "/freshet/cost/series",
    "/freshet/traces",
    "/freshet/traces/0af7651916cd43dd8448eb211c80319c",
    "/freshet/state",
    "/freshet/ui",
    "/schema/openapi.json",
]
HEADER_NAMES = [
    b"content-type",
    b"authorization",
    b"host",
    b"origin",
    b"access-control-request-method",
    b"x-freshet-min-knowledge-cutoff",
    b"x-freshet-max-staleness-days",
    b"x-freshet-max-ttft-ms",
    b"traceparent",
    b"tracestate",
    b"accept",
    b"content-length",
]
# What an HTTP parser hands over: any byte but CR, LF and NUL.
header_value = st.binary(max_size=64).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
)
header = st.tuples(st.sampled_from(HEADER_NAMES), header_value) | st.sampled_from(
    [
        (b"content-type", b"application/json"),
        (b"host", b"localhost:8400"),
        (b"x-freshet-max-staleness-days", b"99999999999999999999"),
        (b"x-freshet-max-ttft-ms", b"nan"),
        (b"origin", b"https://app.example.com"),
    ]
)
json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FIELDS = [
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "user",
    "metadata",
    "logit_bias",
    "freshness",
    "max_ttft_ms",
]
chat = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "det", "x" * 300]) | st.text(max_size=10)},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "x"])},
                optional={"content": json_value},
            ),
            max_size=3,
        ),
        **{name: json_value for name in FIELDS[2:]},
    },
)
body = (
    st.binary(max_size=200)
    | chat.map(lambda d: json.dumps(d).encode())
    | st.tuples(chat, st.binary(min_size=1, max_size=8)).map(
        lambda t: json.dumps(t[0]).encode().replace(b'"auto"', b'"a' + t[1] + b'"')
    )
    | st.integers(1, 3000).map(lambda n: b'{"messages": ' + b"[" * n + b"]" * n + b"}")
)
query = st.binary(max_size=60) | st.sampled_from(
    [b"offset=9223372036854775808", b"since=1e15", b"model=auto&prompt_tokens=1e99", b"limit=0"]
)


STATUSES: collections.Counter[int] = collections.Counter()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    tmp: Path = tmp_path_factory.mktemp("property")
    path = tmp / "freshet.yaml"
    path.write_bytes(msgspec.yaml.encode({**CONFIG, "server": {"max_body_bytes": 1 << 16}}))
    settings_ = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp / "data")})
    with TestClient(app=create_app(settings_, Runtime(settings_))) as client:
        for _ in range(3000):
            if client.get("/ready").status_code == 200:
                break
        yield client
    print(f"property: {sum(STATUSES.values())} requests, statuses {sorted(STATUSES.items())}")


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "GET", "PUT", "OPTIONS", "HEAD"]),
    path=st.one_of(
        st.sampled_from(PATHS[:2]),
        st.sampled_from(PATHS),
        st.text(max_size=30).map(lambda s: "/" + s),
    ),
    headers=st.lists(header, max_size=6).map(
        lambda h: [(b"content-type", b"application/json"), *h]
    ),
    body=body,
    query=query,
)
def test_no_request_gets_a_5xx(
    app: TestClient[Any],
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    query: bytes,
) -> None:
    answer = app.blocking_portal.call(send, app.app, method, path, headers, body, query)
    STATUSES[answer.status] += 1
    assert answer.status < 500, (answer.status, answer.body[:300])
    if answer.status >= 400 and method != "HEAD":
        assert answer.headers.get(b"x-request-id", b"").startswith(b"req_")
        if answer.headers.get(b"content-type", b"").startswith(b"application/json"):
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    health = app.blocking_portal.call(send, app.app, "GET", "/health")
    assert health.status == 200
