"""The edge in front of Litestar answers the generation endpoints: every kind of request
gets its status, OpenAI-shaped error and request id; ``X-Freshet-*`` headers are parsed
and checked there (a bad one is a 400 naming it, never a 5xx), and a repeated
``Authorization`` header is refused on every route alike."""

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
from tests.support.asgi import http_scope
from tests.support.inprocess import wait_ready

CONFIG = {
    "backends": [
        {"id": "det", "type": "deterministic", "model": "det", "knowledge_cutoff": "2024-06-01"},
        {
            "id": "broken",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "broken",
            "fail_before_first": True,
        },
    ],
    "groups": {"auto": ["det"]},
    "server": {"max_body_bytes": 4096},
}
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
# Per-request values that differ between any two responses.
VOLATILE_HEADERS = {"x-request-id", "date"}
VOLATILE_FIELDS = {"id", "created"}


async def _client(tmp: Path, env: dict[str, str]) -> AsyncTestClient[Any]:
    path = tmp / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(CONFIG))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp), **env})
    app = create_app(settings, Runtime(settings))
    assert isinstance(app, Gateway)
    assert app.generation is not None
    return AsyncTestClient(app=app)


@pytest_asyncio.fixture(params=[{}, {"FRESHET_AUTH": "on"}], ids=["open", "auth-on"])
async def gateway(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[AsyncTestClient[Any], bool]]:
    async with await _client(tmp_path, request.param) as client:
        await wait_ready(client)
        yield client, bool(request.param)


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


REQUESTS: list[tuple[str, str, bytes | dict[str, Any], int]] = [
    ("chat", CHAT, {"model": "auto", "messages": HI, "max_tokens": 3}, 200),
    ("chat to a model", CHAT, {"model": "det", "messages": HI, "max_tokens": 2, "seed": 4}, 200),
    ("completion", "/v1/completions", {"model": "auto", "prompt": "once", "max_tokens": 3}, 200),
    ("stream", CHAT, {"model": "auto", "messages": HI, "max_tokens": 4, "stream": True}, 200),
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
        200,
    ),
    ("unknown model", CHAT, {"model": "gpt-99", "messages": HI}, 404),
    ("backend down", CHAT, {"model": "broken", "messages": HI}, 502),
    ("not JSON", CHAT, b'{"model": "auto", ', 400),
    ("empty body", CHAT, b"", 400),
    ("array", CHAT, b"[1, 2]", 400),
    ("missing field", CHAT, {"model": "auto"}, 400),
    ("nested missing field", CHAT, {"model": "auto", "messages": [{"content": "hi"}]}, 400),
    ("bad enum", CHAT, {"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}, 400),
    ("out of range", CHAT, {"model": "auto", "messages": HI, "temperature": 7}, 400),
    ("n=3", CHAT, {"model": "auto", "messages": HI, "n": 3}, 400),
    # Once accepted by the Litestar path and refused by the fast path: one edge, one answer.
    ("max_tokens as a string", CHAT, {"model": "auto", "messages": HI, "max_tokens": "10"}, 400),
    (
        "unknown freshness field",
        CHAT,
        {"model": "auto", "messages": HI, "freshness": {"x": 1}},
        200,
    ),
    (
        "unmet freshness",
        CHAT,
        {"model": "auto", "messages": HI, "freshness": {"min_knowledge_cutoff": "2030-01-01"}},
        422,
    ),
    (
        "over the body limit",
        CHAT,
        {"model": "auto", "messages": [{"role": "user", "content": "x" * 5000}]},
        413,
    ),
    # Issue 17: these were 500s with a traceback in the log.
    (
        "invalid UTF-8",
        CHAT,
        b'{"model": "auto", "messages": [{"role": "user", "content": "\xff"}]}',
        400,
    ),
    ("nested 1,000 deep", CHAT, b'{"model": "auto", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400),
    ("model name too long", CHAT, {"model": "m" * 257, "messages": HI}, 400),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "path", "body", "status"), REQUESTS, ids=[r[0] for r in REQUESTS])
async def test_the_edge_answers_every_kind_of_request(
    gateway: tuple[AsyncTestClient[Any], bool],
    name: str,
    path: str,
    body: bytes | dict[str, Any],
    status: int,
) -> None:
    client, auth_on = gateway
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await client.post(path, content=content, headers={"content-type": "application/json"})
    view = _view(resp.status_code, resp.headers, resp.content)
    assert view["has_request_id"]
    if auth_on:  # no key: refused before the body is read
        assert view["status"] == 401
        assert view["body"]["error"]["code"] == "invalid_api_key"
        return
    assert view["status"] == status, view
    if status == 200:
        assert view["route"].startswith("cheapest-fresh")
        return
    error = view["body"]["error"]
    assert view["type"] == "application/json"
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]


BAD_HEADERS = [
    ("x-freshet-max-ttft-ms", "nan"),
    ("x-freshet-max-ttft-ms", "-1"),
    ("x-freshet-max-ttft-ms", "inf"),
    ("x-freshet-max-ttft-ms", "soon"),
    ("x-freshet-max-staleness-days", "\u00b2"),
    ("x-freshet-max-staleness-days", "99999999999999999999"),
    ("x-freshet-max-staleness-days", "-3"),
    ("x-freshet-min-knowledge-cutoff", "2025-13-45"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "value"), BAD_HEADERS)
async def test_a_bad_freshet_header_is_a_400_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    body = {"model": "auto", "messages": HI, "max_tokens": 2}
    async with await _client(tmp_path, {}) as client:
        await wait_ready(client)
        raw = [(b"content-type", b"application/json"), (name.encode(), value.encode())]
        resp = await client.post(CHAT, content=json.dumps(body).encode(), headers=raw)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == name
        dry = await client.post("/freshet/route", json=body, headers=raw)
        assert dry.status_code == 400, dry.text


@pytest.mark.asyncio
async def test_headers_that_ask_for_more_than_the_calendar_holds_are_no_error(
    tmp_path: Path,
) -> None:
    body: dict[str, Any] = {"model": "auto", "messages": HI, "max_tokens": 2}
    async with await _client(tmp_path, {}) as client:
        await wait_ready(client)
        headers = {"x-freshet-max-staleness-days": "99999999999", "x-freshet-max-ttft-ms": "1e9"}
        resp = await client.post(CHAT, json=body, headers=headers)
        assert resp.status_code == 200, resp.text
        body["freshness"] = {"max_staleness_days": 1_000_000_000}
        assert (await client.post(CHAT, json=body)).status_code == 200
        route = await client.get(
            "/freshet/route", params={"model": "auto", "max_staleness_days": 10**12}
        )
        assert route.status_code == 200, route.text


async def _raw_asgi(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request straight into the ASGI app, headers exactly as given (a test client
    would fold repeated headers into one)."""
    scope = http_scope(method, path, [(b"host", b"127.0.0.1"), *headers])
    sent: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), content


@pytest.mark.asyncio
@pytest.mark.parametrize("path", [CHAT, "/v1/models", "/freshet/usage"])
async def test_two_authorization_headers_are_refused_on_every_route(
    tmp_path: Path, path: str
) -> None:
    async with await _client(tmp_path, {"FRESHET_AUTH": "on"}) as client:
        await wait_ready(client)
        raw = [
            (b"authorization", b"Bearer wrong"),
            (b"authorization", b"Bearer fk-right"),
            (b"content-type", b"application/json"),
        ]
        body = json.dumps({"model": "auto", "messages": HI}).encode()
        method = "POST" if path == CHAT else "GET"
        status, headers, content = await _raw_asgi(client.app, method, path, raw, body)
        assert status == 400, content
        assert json.loads(content)["error"]["param"] == "authorization"
        assert headers[b"x-request-id"].startswith(b"req_")


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
    async with await _client(tmp_path, {}) as client:
        await wait_ready(client)
        resp = await client.post(CHAT, json=body)
        names = [name.lower() for name, _ in resp.headers.multi_items()]
        assert resp.status_code == 200
        assert sorted(names) == sorted(set(names))
