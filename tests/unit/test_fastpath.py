"""The raw-ASGI fast path answers the generation endpoints exactly as the Litestar route
does: the same requests through both (``server.fast_path`` on and off) give the same
status, error JSON, headers and stream events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from gateway import protocol as p
from gateway.api.app import Gateway, create_app
from gateway.api.error_response import decode_error
from gateway.api.runtime import Runtime
from gateway.settings import load_settings
from tests.support.inprocess import wait_ready

CONFIG = {
    "backends": [
        {"id": "det", "type": "deterministic", "model": "det", "knowledge_cutoff": "2024-06-01"},
        {"id": "broken", "type": "deterministic", "model": "broken", "fail_before_first": True},
    ],
    "groups": {"auto": ["det"]},
    "server": {"max_body_bytes": 4096},
}
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
# Per-request values that differ between any two responses.
VOLATILE_HEADERS = {"x-request-id", "date"}
VOLATILE_FIELDS = {"id", "created"}


async def _client(tmp: Path, fast: bool, env: dict[str, str]) -> AsyncTestClient[Any]:
    path = tmp / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(CONFIG))
    full_env = {"FRESHET_DATA_DIR": str(tmp), "FRESHET_FAST_PATH": str(fast).lower(), **env}
    settings = load_settings(str(path), env=full_env)
    app = create_app(settings, Runtime(settings))
    assert isinstance(app, Gateway)
    assert (app.fast_path is not None) is fast
    return AsyncTestClient(app=app)


@pytest_asyncio.fixture(params=[{}, {"FRESHET_AUTH": "on"}], ids=["open", "auth-on"])
async def both(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[AsyncTestClient[Any], AsyncTestClient[Any]]]:
    (tmp_path / "fast").mkdir()
    (tmp_path / "litestar").mkdir()
    fast = await _client(tmp_path / "fast", True, request.param)
    slow = await _client(tmp_path / "litestar", False, request.param)
    async with fast, slow:
        await wait_ready(fast)
        await wait_ready(slow)
        yield fast, slow


def _json_view(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return body

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(data)


def _view(status: int, headers: Any, body: bytes) -> dict[str, Any]:
    names = {k.lower() for k in headers} - VOLATILE_HEADERS
    route = headers.get("x-freshet-route", "")
    if headers.get("content-type", "").startswith("text/event-stream"):
        events = [_json_view(line[6:]) for line in body.split(b"\n\n") if line.startswith(b"data")]
        content = events
    else:
        content = _json_view(body)
    return {
        "status": status,
        "headers": names - {"content-length"},  # chunked or not: a server's choice
        "type": headers.get("content-type", "").split(";")[0],
        "route": route,
        "body": content,
        "has_request_id": headers.get("x-request-id", "").startswith("req_"),
    }


REQUESTS: list[tuple[str, str, bytes | dict[str, Any]]] = [
    ("chat", CHAT, {"model": "auto", "messages": HI, "max_tokens": 3}),
    ("chat to a model", CHAT, {"model": "det", "messages": HI, "max_tokens": 2, "seed": 4}),
    ("completion", "/v1/completions", {"model": "auto", "prompt": "once", "max_tokens": 3}),
    ("stream", CHAT, {"model": "auto", "messages": HI, "max_tokens": 4, "stream": True}),
    (
        "stream with usage",
        "/v1/completions",
        {
            "model": "auto",
            "prompt": "once",
            "max_tokens": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    ("unknown model", CHAT, {"model": "gpt-99", "messages": HI}),
    ("backend down", CHAT, {"model": "broken", "messages": HI}),
    ("not JSON", CHAT, b'{"model": "auto", '),
    ("empty body", CHAT, b""),
    ("array", CHAT, b"[1, 2]"),
    ("missing field", CHAT, {"model": "auto"}),
    ("nested missing field", CHAT, {"model": "auto", "messages": [{"content": "hi"}]}),
    ("bad enum", CHAT, {"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}),
    ("out of range", CHAT, {"model": "auto", "messages": HI, "temperature": 7}),
    ("n=3", CHAT, {"model": "auto", "messages": HI, "n": 3}),
    ("bad freshness", CHAT, {"model": "auto", "messages": HI, "freshness": {"x": 1}}),
    (
        "unmet freshness",
        CHAT,
        {"model": "auto", "messages": HI, "freshness": {"min_knowledge_cutoff": "2030-01-01"}},
    ),
    (
        "over the body limit",
        CHAT,
        {"model": "auto", "messages": [{"role": "user", "content": "x" * 5000}]},
    ),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "path", "body"), REQUESTS, ids=[r[0] for r in REQUESTS])
async def test_fast_path_answers_as_litestar_does(
    both: tuple[AsyncTestClient[Any], AsyncTestClient[Any]],
    name: str,
    path: str,
    body: bytes | dict[str, Any],
) -> None:
    views = []
    for client in both:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        resp = await client.post(
            path, content=content, headers={"content-type": "application/json"}
        )
        views.append(_view(resp.status_code, resp.headers, resp.content))
    fast, slow = views
    assert fast == slow
    assert fast["has_request_id"]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b'{"model": "auto"}', "messages", "missing required field `messages`"),
        (b'{"model": "a", "messages": [{"content": "x"}]}', "messages[0].role", "missing"),
        (b'{"model": "a", "messages": [], "top_p": 3}', "messages", "length >= 1"),
        (
            b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "top_p": 3}',
            "top_p",
            "<= 1.0",
        ),
        (b"[]", None, "Expected `object`, got `array`"),
        (b"{", None, "not valid JSON"),
    ],
)
def test_decode_errors_name_the_field(body: bytes, param: str | None, fragment: str) -> None:
    with pytest.raises(msgspec.MsgspecError) as info:
        msgspec.json.decode(body, type=p.ChatCompletionRequest)
    error = decode_error(info.value)
    assert error.status == 400
    assert error.param == param
    assert fragment in error.message


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_no_header_is_sent_twice(tmp_path: Path, stream: bool) -> None:
    body = {"model": "auto", "messages": HI, "max_tokens": 2, "stream": stream}
    async with await _client(tmp_path, True, {}) as client:
        await wait_ready(client)
        resp = await client.post(CHAT, json=body)
        names = [name.lower() for name, _ in resp.headers.multi_items()]
        assert resp.status_code == 200
        assert sorted(names) == sorted(set(names))
