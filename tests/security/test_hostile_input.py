"""Issue 17, point 1: malformed input is a 400 in OpenAI's shape, logged as one line,
never a 500 with a traceback; and the bounds the wire types put on every value."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.security.gateways import (
    CHAT,
    COMPLETIONS,
    HI,
    JSON,
    assert_openai_error,
    gateway,
    send,
)

# Invalid UTF-8 inside JSON strings, as the issue found them.
BAD_UTF8 = {
    "ff fe": b"a\xff\xfe",
    "overlong slash": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "truncated": b"\xe2\x82",
    "latin-1": "caf\u00e9".encode("latin-1"),
}
PLACES = {
    "content": (CHAT, b'{"model": "auto", "messages": [{"role": "user", "content": "%s"}]}'),
    "model": (CHAT, b'{"model": "auto%s", "messages": [{"role": "user", "content": "hi"}]}'),
    "prompt": (COMPLETIONS, b'{"model": "auto", "prompt": "%s"}'),
    "ignored field": (CHAT, b'{"model": "auto", "messages": [], "x": "%s"}'),
    "route dry run": ("/freshet/route", b'{"model": "auto%s", "messages": [{"role": "user"}]}'),
}


def _one_line_refusals(caplog: pytest.LogCaptureFixture) -> None:
    """What a refused request leaves in the log: no traceback, no ERROR, one line each."""
    for record in caplog.records:
        assert record.levelno < logging.ERROR, record.getMessage()
        assert record.exc_info is None
        assert "\n" not in record.getMessage()
    assert any(r.name == "gateway.api.error_response" for r in caplog.records)


@pytest.mark.asyncio
async def test_invalid_utf8_is_a_400_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway(tmp_path) as client:
        for place, (path, template) in PLACES.items():
            for name, raw in BAD_UTF8.items():
                body = template.replace(b"%s", raw)
                answer = await send(client.app, "POST", path, JSON, body)
                error = assert_openai_error(answer, 400)
                assert "not valid UTF-8" in error["message"], (place, name, error)
    _one_line_refusals(caplog)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.asyncio
@pytest.mark.parametrize("depth", [1000, 5000, 100_000])
async def test_deep_nesting_is_a_400_on_every_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    caplog.set_level(logging.INFO)
    deep = _nested(depth)
    bodies = {
        # Deep inside a tool's JSON Schema: a field whose value is any JSON.
        CHAT: b'{"model": "auto", "messages": [{"role": "user"}], "tools": [{"type": "function",'
        b' "function": {"name": "f", "parameters": {"type": "object", "x": ' + deep + b"}}}]}",
        COMPLETIONS: b'{"model": "auto", "prompt": "x", "x": ' + deep + b"}",
        "/freshet/route": b'{"model": "auto", "messages": ' + deep + b"}",
    }
    async with gateway(tmp_path, server={"max_body_bytes": 1 << 20}) as client:
        for path, body in bodies.items():
            answer = await send(client.app, "POST", path, JSON, body)
            error = assert_openai_error(answer, 400)
            assert "nested too deeply" in error["message"], (path, error)
        # What a real request nests is far below the limit: 900 levels of ignored field.
        fine = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x": '
        answer = await send(client.app, "POST", CHAT, JSON, fine + _nested(900) + b"}")
        assert answer.status == 200, answer.body
    _one_line_refusals(caplog)


QUERIES = [
    ("/freshet/usage", b"offset=9223372036854775808", "offset"),
    ("/freshet/usage", b"offset=-1", "offset"),
    ("/freshet/cost/series", b"since=1e15", "since"),
    ("/freshet/cost/series", b"until=1e15", "until"),
    ("/freshet/cost/report", b"since=1e15", "since"),
    ("/freshet/usage", b"since=99999999999w", "since"),
    ("/freshet/cost/series", b"since=0&bucket=minute", "bucket"),
    ("/freshet/usage", b"model=" + b"m" * 300, "model"),
    ("/freshet/route", b"model=" + b"m" * 300, "model"),
    ("/freshet/route", b"model=auto&prompt_tokens=99999999999999999999", "prompt_tokens"),
    ("/freshet/route", b"model=auto&max_tokens=-5", "max_tokens"),
    ("/freshet/route", b"model=auto&max_ttft_ms=nan", "max_ttft_ms"),
    ("/freshet/traces", b"limit=99999999999999999999999", "limit"),
]


@pytest.mark.asyncio
async def test_query_numbers_and_dates_are_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway(tmp_path) as client:
        await client.post(CHAT, json={"model": "auto", "messages": HI, "max_tokens": 2})
        for path, query, param in QUERIES:
            answer = await send(client.app, "GET", path, query=query)
            error = assert_openai_error(answer, 400)
            assert param in (error["param"] or "") + error["message"], (path, query, error)
        long_id = await send(client.app, "GET", "/freshet/traces/" + "f" * 100_000)
        assert_openai_error(long_id, 404)
        # Raw bytes in a query string, on a route whose validation then fails.
        for path in ("/freshet/route", "/freshet/usage", "/health"):
            raw = await send(client.app, "POST", path, JSON, b"{}", query=b"model=\x9b")
            assert assert_openai_error(raw, 400)["param"] == "query", path
    _one_line_refusals(caplog)


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": "auto", "messages": HI, "max_tokens": 2, **fields}).encode()


PART = {"type": "t" * 65, "text": "x"}
BOUNDS = [
    ("model", {"model": "m" * 257}),
    ("messages[0].name", {"messages": [{"role": "user", "content": "x", "name": "n" * 257}]}),
    ("user", {"user": "u" * 257}),
    ("max_tokens", {"max_tokens": 2**31}),
    ("max_completion_tokens", {"max_completion_tokens": 10**30}),
    ("seed", {"seed": 2**63}),
    ("seed", {"seed": -(2**63) - 1}),
    ("n", {"n": 129}),
    ("metadata", {"metadata": {f"k{i}": "v" for i in range(17)}}),
    ("metadata", {"metadata": {"k": "v" * 513}}),
    ("logit_bias", {"logit_bias": {"50256": 101}}),
    ("messages[0].content[0].type", {"messages": [{"role": "user", "content": [PART]}]}),
]


@pytest.mark.asyncio
async def test_every_value_has_a_bound(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        for param, fields in BOUNDS:
            answer = await send(client.app, "POST", CHAT, JSON, _chat(**fields))
            error = assert_openai_error(answer, 400)
            assert (error["param"] or "").startswith(param), (fields, error)
        # Within the bounds, and OpenAI's own limits, everything is still taken.
        fine = _chat(
            model="auto",
            user="u" * 256,
            seed=2**63 - 1,
            max_tokens=20,
            metadata={f"k{i}": "v" * 512 for i in range(16)},
            logit_bias={"50256": -100},
        )
        answer = await send(client.app, "POST", CHAT, JSON, fine)
        assert answer.status == 200, answer.body


@pytest.mark.asyncio
async def test_an_error_quoting_the_client_is_cut(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        long = "x" * 5000
        answer = await send(
            client.app, "POST", CHAT, [*JSON, (b"x-freshet-min-knowledge-cutoff", long.encode())]
        )
        error = assert_openai_error(answer, 400)
        assert len(error["message"]) < 1100
        answer = await send(
            client.app, "GET", "/freshet/cost/report", query=b"group_by=" + b"g" * 5000
        )
        assert len(assert_openai_error(answer, 400)["message"]) < 1100
