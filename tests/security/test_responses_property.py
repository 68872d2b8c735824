"""A property of ``/v1/responses`` (issue 19): whatever JSON a client sends as a Responses
request (items of any kind and shape, tools, tool choices, formats, ids), streamed or not,
the answer is never a 5xx and every error has OpenAI's shape; a stream is the Responses
events. In-process, straight into the ASGI app, on a deterministic fleet."""

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
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "input_image", "refusal", "x"])},
    optional={"text": text | json_value},
)
item = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            ["message", "function_call", "function_call_output", "reasoning", "item_reference"]
        )
        | json_value,
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]),
        "content": text | st.lists(part, max_size=3) | json_value,
        "call_id": text,
        "name": text,
        "arguments": text | json_value,
        "output": text | st.lists(part, max_size=2),
        "id": text,
    },
)
tool = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "web_search", "file_search"])},
    optional={
        "name": st.sampled_from(["f", "g", ""]) | text,
        "parameters": st.sampled_from(
            [{"type": "object"}, {"type": "array"}, {"type": 7}, {"properties": []}, {}]
        )
        | json_value,
        "strict": st.booleans(),
    },
)
request = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "det", "nope"])},
    optional={
        "input": text | st.lists(item, max_size=4) | json_value,
        "instructions": text | json_value,
        "max_output_tokens": st.integers(-2, 40) | json_value,
        "temperature": st.floats(-1, 3) | json_value,
        "top_p": st.floats(-1, 2),
        "stream": st.booleans(),
        "store": st.booleans() | json_value,
        "previous_response_id": st.sampled_from(["resp_nope", ""]) | json_value,
        "tools": st.lists(tool, max_size=3) | json_value,
        "tool_choice": st.sampled_from(
            ["none", "auto", "required", "any", {"type": "function", "name": "f"}]
        )
        | json_value,
        "parallel_tool_calls": st.booleans() | json_value,
        "text": st.fixed_dictionaries(
            {},
            optional={
                "format": st.fixed_dictionaries(
                    {"type": st.sampled_from(["text", "json_object", "json_schema", "xml"])},
                    optional={"name": text, "schema": json_value},
                )
            },
        )
        | json_value,
        "metadata": json_value,
        "freshness": json_value,
    },
)

# Mostly well-formed: the answers that are not refusals get exercised too.
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer"]), "content": text}
)
well_formed = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "det"]), "input": text | st.lists(message, min_size=1)},
    optional={
        "instructions": text,
        "max_output_tokens": st.integers(1, 8),
        "stream": st.booleans(),
        "store": st.booleans(),
        "temperature": st.floats(0, 2),
        "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    },
)

STATUSES: collections.Counter[int] = collections.Counter()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    tmp: Path = tmp_path_factory.mktemp("responses-property")
    path = tmp / "freshet.yaml"
    path.write_bytes(msgspec.yaml.encode(CONFIG))
    settings_ = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp / "data")})
    with TestClient(app=create_app(settings_, Runtime(settings_))) as client:
        for _ in range(3000):
            if client.get("/ready").status_code == 200:
                break
        yield client
    print(f"responses property: {sum(STATUSES.values())} requests, {sorted(STATUSES.items())}")


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=request | well_formed)
def test_no_responses_request_gets_a_5xx(app: TestClient[Any], body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    answer = app.blocking_portal.call(send, app.app, "POST", "/v1/responses", JSON, raw)
    STATUSES[answer.status] += 1
    assert answer.status < 500, (answer.status, answer.body[:300])
    if answer.status >= 400:
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        return
    if answer.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        names = [
            line.removeprefix(b"event: ")
            for line in answer.body.split(b"\n")
            if line.startswith(b"event: ")
        ]
        assert names[:2] == [b"response.created", b"response.in_progress"]
        assert names[-1] in {b"response.completed", b"response.incomplete"}
        return
    response = answer.json()
    assert response["object"] == "response"
    stored = app.blocking_portal.call(send, app.app, "GET", "/v1/responses/" + response["id"])
    assert stored.status == (404 if body.get("store") is False else 200)
