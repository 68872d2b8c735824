"""Issue 17, points 8 and 9: with auth on, the OpenAPI document is behind the admin key
(unless ``server.open_schema``); under ``auth: auto`` the first key created while the
gateway runs turns auth on within ``keys.refresh_s``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.state.keys import new_key
from gateway.state.keys_sqlite import SQLiteKeyStore
from tests.security.gateways import CHAT, HI, assert_openai_error, gateway, send

ADMIN = "admin-secret"
AUTH_ON = {"FRESHET_AUTH": "on", "FRESHET_ADMIN_KEY": ADMIN}
SCHEMA = ["/schema", "/schema/", "/schema/openapi.json", "/schema/scalar"]
# Other spellings must not reach the document without the key either.
ODD = ["//schema/openapi.json", "/schema//openapi.json", "/./schema", "/schema/./openapi.json"]


def _bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


@pytest.mark.asyncio
async def test_the_schema_needs_the_admin_key_when_auth_is_on(tmp_path: Path) -> None:
    async with gateway(tmp_path, env=AUTH_ON) as client:
        for path in SCHEMA:
            refused = await send(client.app, "GET", path)
            assert assert_openai_error(refused, 401)["code"] == "invalid_api_key", path
            wrong = await send(client.app, "GET", path, _bearer("fk-not-admin"))
            assert_openai_error(wrong, 401)
            allowed = await send(client.app, "GET", path, _bearer(ADMIN))
            assert allowed.status in (200, 301, 302, 307, 308), (path, allowed.status)
        for path in ODD:
            answer = await send(client.app, "GET", path)
            assert answer.status in (401, 404), (path, answer.status, answer.body[:100])


@pytest.mark.asyncio
async def test_the_schema_can_be_left_open(tmp_path: Path) -> None:
    async with gateway(tmp_path, server={"open_schema": True}, env=AUTH_ON) as client:
        answer = await send(client.app, "GET", "/schema/openapi.json")
        assert answer.status == 200
        assert b'"openapi"' in answer.body
        # Only the schema: the admin routes still need the key.
        assert_openai_error(await send(client.app, "GET", "/freshet/usage"), 401)


@pytest.mark.asyncio
async def test_the_schema_is_open_when_auth_is_off(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        assert (await send(client.app, "GET", "/schema/openapi.json")).status == 200


@pytest.mark.asyncio
async def test_auth_auto_turns_on_with_the_first_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.state.auth")
    body = {"model": "auto", "messages": HI, "max_tokens": 2}
    async with gateway(tmp_path, keys={"refresh_s": 0.05}) as client:
        assert (await client.post(CHAT, json=body)).status_code == 200  # open: no keys yet
        # `freshet keys create` in another process, while the gateway runs.
        store = SQLiteKeyStore(tmp_path / "data")
        secret, key = new_key("first")
        await store.add(key)
        await store.aclose()
        for _ in range(200):  # 10 s at most; refresh_s is 0.05
            if (await client.post(CHAT, json=body)).status_code == 401:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("auth stayed off after the first key was created")
        allowed = await client.post(CHAT, json=body, headers={"authorization": f"Bearer {secret}"})
        assert allowed.status_code == 200
        assert (await client.get("/freshet/state")).status_code == 401  # admin routes closed
    lines = [r.getMessage() for r in caplog.records if "auth: ON" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "API key was created" in lines[0]
