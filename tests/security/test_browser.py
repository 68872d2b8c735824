"""Issue 17, point 6: a web page cannot use a default gateway. The generation endpoints
take only JSON (no CORS-free "simple" POST), every route answers only the host names
allowed (no DNS rebinding), and CORS is off unless origins are listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.api.browser import BrowserGuard, host_name
from tests.security.gateways import (
    CHAT,
    COMPLETIONS,
    HI,
    JSON,
    assert_openai_error,
    gateway,
    send,
)

BODY = json.dumps({"model": "auto", "messages": HI, "max_tokens": 2}).encode()
PROMPT = json.dumps({"model": "auto", "prompt": "once", "max_tokens": 2}).encode()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        b"text/plain",
        b"text/plain;charset=UTF-8",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"application/jsonx",
        b"json",
    ],
)
async def test_generation_takes_only_json(tmp_path: Path, content_type: bytes | None) -> None:
    headers = [(b"content-type", content_type)] if content_type is not None else []
    async with gateway(tmp_path) as client:
        for path, body in ((CHAT, BODY), (COMPLETIONS, PROMPT)):
            answer = await send(client.app, "POST", path, headers, body)
            error = assert_openai_error(answer, 415)
            assert error["param"] == "content-type"
            assert error["code"] == "unsupported_media_type"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"application/json; charset=utf-8", b"Application/JSON ;charset=UTF-8"],
)
async def test_json_with_parameters_is_taken(tmp_path: Path, content_type: bytes) -> None:
    async with gateway(tmp_path) as client:
        answer = await send(client.app, "POST", CHAT, [(b"content-type", content_type)], BODY)
        assert answer.status == 200, answer.body


EVERY_ROUTE = [
    ("POST", CHAT),
    ("POST", COMPLETIONS),
    ("GET", "/v1/models"),
    ("GET", "/health"),
    ("GET", "/freshet/usage"),
    ("GET", "/freshet/traces"),
    ("GET", "/freshet/ui"),
    ("GET", "/schema/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/no/such/route"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "host",
    [b"evil.example", b"evil.example:8400", b"localhost.evil.example", b"127.0.0.1.nip.io:8400"],
)
async def test_a_gateway_on_loopback_answers_only_loopback_names(
    tmp_path: Path, host: bytes
) -> None:
    async with gateway(tmp_path) as client:
        for method, path in EVERY_ROUTE:
            answer = await send(client.app, method, path, JSON, BODY, host=host)
            error = assert_openai_error(answer, 421)
            assert error["code"] == "host_not_allowed", (path, error)
            assert error["param"] == "host"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "host", [b"localhost", b"LOCALHOST:8400", b"localhost.:8400", b"127.0.0.1:9", b"[::1]:8400"]
)
async def test_loopback_names_with_any_port_are_answered(tmp_path: Path, host: bytes) -> None:
    async with gateway(tmp_path) as client:
        for method, path in EVERY_ROUTE[:-1]:
            body = PROMPT if path == COMPLETIONS else BODY
            answer = await send(client.app, method, path, JSON, body, host=host)
            assert answer.status == 200, (path, answer.status, answer.body[:200])


@pytest.mark.asyncio
@pytest.mark.parametrize("bound", ["127.0.0.1", "0.0.0.0"])
@pytest.mark.parametrize(
    "host", [b"localhost:8400:x", b"localhost:99999", b"[::1", b"", b"a b", b"u@localhost", b"\xe9"]
)
async def test_a_malformed_host_is_a_400_however_bound(
    tmp_path: Path, bound: str, host: bytes
) -> None:
    server = {"host": bound}
    async with gateway(tmp_path, server=server, env={"FRESHET_AUTH": "off"}) as client:
        for method, path in EVERY_ROUTE:
            answer = await send(client.app, method, path, JSON, b"{", host=host)
            error = assert_openai_error(answer, 400)
            assert error["code"] == "invalid_host", (path, error)


@pytest.mark.asyncio
async def test_two_host_headers_are_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        twice = [(b"host", b"evil.example"), *JSON]
        for method, path in EVERY_ROUTE:
            answer = await send(client.app, method, path, twice, BODY)
            assert assert_openai_error(answer, 400)["param"] == "host"


@pytest.mark.asyncio
async def test_the_allow_list_is_configurable(tmp_path: Path) -> None:
    hosts = ["gw.example.com", "*.internal.example"]
    async with gateway(tmp_path, server={"allowed_hosts": hosts}) as client:
        for host, status in [
            (b"gw.example.com", 200),
            (b"GW.example.com:443", 200),
            (b"a.b.internal.example", 200),
            (b"internal.example", 421),
            (b"localhost", 421),  # listed hosts replace the defaults
            (b"127.0.0.1:8400", 200),  # the address the connection came in on
            (b"evil.example", 421),
        ]:
            answer = await send(client.app, "POST", CHAT, JSON, BODY, host=host)
            assert answer.status == status, (host, answer.body)


def test_bound_elsewhere_every_host_is_answered_unless_configured() -> None:
    anywhere = BrowserGuard("0.0.0.0")
    assert not anywhere.hosts_checked
    anywhere.check_host("evil.example", ("10.0.0.5", 8400))
    assert BrowserGuard("127.0.0.1", ["*"]).hosts_checked is False
    assert BrowserGuard("0.0.0.0", ["gw.example.com"]).hosts_checked
    assert BrowserGuard("::1").hosts_checked
    assert host_name("[::1]:8400") == "::1"
    assert host_name("Example.COM.") == "example.com"
    assert host_name("a:b") is None


ORIGIN = b"https://app.example.com"
REQUESTED = b"authorization, content-type, x-stainless-os"


@pytest.mark.asyncio
async def test_cors_is_off_by_default(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        answer = await send(client.app, "POST", CHAT, [*JSON, (b"origin", ORIGIN)], BODY)
        assert answer.status == 200
        assert not any(name.startswith(b"access-control-") for name in answer.headers)
        preflight = await send(
            client.app,
            "OPTIONS",
            CHAT,
            [(b"origin", ORIGIN), (b"access-control-request-method", b"POST")],
        )
        # Litestar's own answer to OPTIONS (204, Allow): without CORS headers, the
        # browser sends nothing.
        assert not any(name.startswith(b"access-control-") for name in preflight.headers)


@pytest.mark.asyncio
async def test_listed_origins_get_cors_on_every_path(tmp_path: Path) -> None:
    async with gateway(tmp_path, server={"cors_origins": [ORIGIN.decode()]}) as client:
        for path in (CHAT, "/v1/models", "/freshet/usage"):
            preflight = await send(
                client.app,
                "OPTIONS",
                path,
                [
                    (b"origin", ORIGIN),
                    (b"access-control-request-method", b"POST"),
                    (b"access-control-request-headers", REQUESTED),
                ],
            )
            assert preflight.status == 204, (path, preflight.body)
            assert preflight.headers[b"access-control-allow-origin"] == ORIGIN
            assert b"POST" in preflight.headers[b"access-control-allow-methods"]
            assert b"x-stainless-os" in preflight.headers[b"access-control-allow-headers"]
            assert preflight.headers[b"x-request-id"].startswith(b"req_")
        answer = await send(client.app, "POST", CHAT, [*JSON, (b"origin", ORIGIN)], BODY)
        assert answer.status == 200
        assert answer.headers[b"access-control-allow-origin"] == ORIGIN
        assert b"x-freshet-route" in answer.headers[b"access-control-expose-headers"]
        models = await send(client.app, "GET", "/v1/models", [(b"origin", ORIGIN)])
        assert models.headers[b"access-control-allow-origin"] == ORIGIN
        # An error is readable by the page too; another origin gets nothing.
        bad = await send(client.app, "POST", CHAT, [*JSON, (b"origin", ORIGIN)], b"{")
        assert bad.status == 400
        assert bad.headers[b"access-control-allow-origin"] == ORIGIN
        other = await send(client.app, "POST", CHAT, [*JSON, (b"origin", b"https://evil")], BODY)
        assert b"access-control-allow-origin" not in other.headers
