"""A property of Anthropic's ``/v1/messages`` with tool use (issue 19): whatever JSON a
client sends as a Messages request (blocks of any kind and shape, tools, tool choices,
stop sequences), streamed or not, the answer is never a 5xx and every error has
Anthropic's shape. In-process, straight into the ASGI app, on a deterministic fleet."""

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
from tests.security.gateways import CONFIG, JSON, send

scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
)
json_value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
text = st.text(max_size=16)
block = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "tool_use", "tool_result", "image", "thinking", "x"])},
    optional={
        "text": text | json_value,
        "id": text,
        "name": text,
        "input": st.dictionaries(text, text, max_size=2) | json_value,
        "tool_use_id": text,
        "content": text
        | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image"])}), max_size=2)
        | json_value,
        "is_error": st.booleans(),
    },
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system"]),
        "content": text | st.lists(block, max_size=3),
    }
)
tool = st.fixed_dictionaries(
    {"name": st.sampled_from(["f", "g", ""]) | text},
    optional={
        "type": st.sampled_from(["custom", "bash_20250124", "web_search_20250305"]),
        "input_schema": st.sampled_from(
            [{"type": "object"}, {"type": "array"}, {"type": 7}, {"properties": []}, {}]
        )
        | json_value,
        "description": text,
    },
)
request = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["auto", "det", "nope"]),
        "max_tokens": st.integers(-1, 8) | json_value,
        "messages": st.lists(message, min_size=1, max_size=3) | json_value,
    },
    optional={
        "system": text | st.lists(block, max_size=2),
        "stream": st.booleans(),
        "stop_sequences": st.lists(text, max_size=3) | json_value,
        "tools": st.lists(tool, max_size=3) | json_value,
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none", "x"])},
            optional={"name": text, "disable_parallel_tool_use": st.booleans()},
        )
        | json_value,
        "temperature": st.floats(-1, 2),
    },
)

STATUSES: collections.Counter[int] = collections.Counter()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    tmp: Path = tmp_path_factory.mktemp("messages-property")
    path = tmp / "freshet.yaml"
    path.write_bytes(msgspec.yaml.encode(CONFIG))
    settings_ = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp / "data")})
    with TestClient(app=create_app(settings_, Runtime(settings_))) as client:
        for _ in range(3000):
            if client.get("/ready").status_code == 200:
                break
        yield client
    print(f"messages property: {sum(STATUSES.values())} requests, {sorted(STATUSES.items())}")


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=request)
def test_no_messages_request_gets_a_5xx(app: TestClient[Any], body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    answer = app.blocking_portal.call(send, app.app, "POST", "/v1/messages", JSON, raw)
    STATUSES[answer.status] += 1
    assert answer.status < 500, (answer.status, answer.body[:300])
    if answer.status >= 400:
        error = answer.json()
        assert error["type"] == "error"
        assert set(error["error"]) == {"type", "message"}
        return
    if answer.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        assert answer.body.startswith(b"event: message_start\n")
        assert answer.body.rstrip().split(b"\n")[-2] == b"event: message_stop"
        return
    assert answer.json()["type"] == "message"
