"""The data behind ``/freshet/ui`` (issue 18, point 11): each key's spend against its
budgets and limits (``/freshet/keys/usage``, never a secret), records by status and energy
source (``/freshet/cost/breakdown``), traces filtered by model, backend, status, key and
HTTP status with their key and energy source; the "not ok" counts of the ledger and of
the traces agree; the page says whether auth is on and holds no data and no key."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.api.ui.controller import page
from gateway.state.keys import new_key
from gateway.state.keys_sqlite import SQLiteKeyStore
from tests.security.gateways import CHAT, gateway

ADMIN = "admin-secret-for-tests"
AUTH_ON = {"FRESHET_AUTH": "on", "FRESHET_ADMIN_KEY": ADMIN}
BACKENDS = [
    {
        "id": "good",
        "type": "deterministic",
        "model": "m-good",
        "knowledge_cutoff": "2024-06-01",
        "profile": {"kind": "gpu", "watts_idle": 100, "watts_active": 400, "capex_per_hour": 2},
        "list_price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
    },
    {
        "id": "broken",
        "type": "deterministic",
        "model": "m-broken",
        "knowledge_cutoff": "2024-06-01",
        "fail_before_first": True,
    },
]
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}


async def _keys(data: Path) -> dict[str, str]:
    store = SQLiteKeyStore(data)
    secrets = {}
    for name, limits in (
        ("team-a", {"budget_usd": 2.0, "budget_joules": 5000.0, "rpm": 100, "tpm": 100_000}),
        ("team-b", {}),
        ("gone", {}),
    ):
        secret, key = new_key(name, **limits)  # type: ignore[arg-type]
        await store.add(key)
        secrets[name] = secret
    await store.revoke("gone")
    await store.aclose()
    return secrets


async def _chat(
    client: AsyncTestClient[Litestar],
    secret: str,
    model: str = "m-good",
    extra: dict[str, Any] | None = None,
) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 4}
    answer = await client.post(
        CHAT, json={**body, **(extra or {})}, headers={"authorization": f"Bearer {secret}"}
    )
    return answer.status_code


async def _admin(client: AsyncTestClient[Litestar], path: str) -> Any:
    answer = await client.get(path, headers=ADMIN_HEADERS)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.asyncio
async def test_keys_usage_breakdown_and_trace_filters(tmp_path: Path) -> None:
    secrets = await _keys(tmp_path / "data")
    async with gateway(tmp_path, env=AUTH_ON, backends=BACKENDS, groups={}) as client:
        for _ in range(3):
            assert await _chat(client, secrets["team-a"]) == 200
        assert await _chat(client, secrets["team-b"]) == 200
        assert await _chat(client, secrets["team-a"], "m-broken") >= 500
        assert await _chat(client, secrets["team-a"], "no-such-model") == 404
        fresh = {"freshness": {"min_knowledge_cutoff": "2030-01-01"}}
        assert await _chat(client, secrets["team-b"], extra=fresh) == 422

        # Admin only, like every data route.
        assert (await client.get("/freshet/keys/usage")).status_code == 401
        assert (await client.get("/freshet/cost/breakdown")).status_code == 401
        usage = await _admin(client, "/freshet/keys/usage")
        text = str(usage)
        for secret in secrets.values():
            assert secret not in text
        assert "digest" not in text
        by_name = {k["name"]: k for k in usage["keys"]}
        assert set(by_name) == {"team-a", "team-b", "gone"}
        a, b, gone = by_name["team-a"], by_name["team-b"], by_name["gone"]
        assert gone["revoked"]
        assert gone["today"]["requests"] == 0
        assert a["today"]["requests"] == 4
        assert a["today"]["not_ok"] == 1
        assert b["today"]["requests"] == 1
        assert b["today"]["not_ok"] == 0
        spent = await _admin(client, "/freshet/usage?key=team-a&limit=100")
        usd = sum(r["usd_total"] for r in spent["data"])
        assert a["today"]["usd"] == pytest.approx(usd)
        assert a["budget_usd"] == 2.0
        assert a["budget_usd_used"] == pytest.approx(usd / 2.0)
        assert a["window"]["requests"] == 4
        assert a["rpm_used"] == pytest.approx(0.04)
        assert a["today"]["joules"]
        assert set(a["today"]["energy_sources"]) == {"model"}
        assert b["budget_usd_used"] is None
        assert b["rpm_used"] is None
        assert usage["keys"][0]["name"] == "team-a"  # the dearest first
        assert usage["unkeyed"]["requests"] == 0

        # Records by status and energy source: what the UI shows beside joules.
        breakdown = await _admin(client, "/freshet/cost/breakdown?group_by=backend&since=1h")
        rows = {(r["value"], r["status"]): r for r in breakdown["rows"]}
        assert rows[("good", "ok")]["requests"] == 4
        assert rows[("good", "ok")]["energy_source"] == "model"
        assert rows[("broken", "error")]["requests"] == 1
        bad = await client.get("/freshet/cost/breakdown?group_by=colour", headers=ADMIN_HEADERS)
        assert bad.status_code == 400

        # Traces: key, HTTP status and energy source; filters.
        traces = await _admin(client, "/freshet/traces")
        assert len(traces) == 7
        ok = [t for t in traces if t["backend"] == "good"]
        assert {t["http_status"] for t in ok} == {200}
        assert {t["energy_source"] for t in ok} == {"model"}
        assert {t["key"] for t in ok} == {"team-a", "team-b"}
        mine = await _admin(client, "/freshet/traces?key=team-a")
        assert len(mine) == 4
        assert {t["key"] for t in mine} == {"team-a"}
        assert len(await _admin(client, "/freshet/traces?backend=broken")) == 1
        assert len(await _admin(client, "/freshet/traces?model=m-good&key=team-b")) == 1
        assert [
            t["http_status"] for t in await _admin(client, "/freshet/traces?http_status=404")
        ] == [404]
        not_ok = await _admin(client, "/freshet/traces?status=not_ok")
        assert len(not_ok) == 3
        assert all(t["status"] != "ok" for t in not_ok)
        limited = await _admin(client, "/freshet/traces?status=ok&limit=2")
        assert len(limited) == 2
        refused = await client.get("/freshet/traces?status=bogus", headers=ADMIN_HEADERS)
        assert refused.status_code == 400

        # The ledger's "not ok" (records) equals the traces' that reached a backend; the
        # others were refused before any backend and have no record.
        records = sum(
            r["requests"]
            for r in (await _admin(client, "/freshet/cost/breakdown"))["rows"]
            if r["status"] != "ok"
        )
        assert records == len([t for t in not_ok if t["backend"] is not None]) == 1
        assert sorted(t["http_status"] for t in not_ok if t["backend"] is None) == [404, 422]


@pytest.mark.asyncio
async def test_the_page_says_auth_is_on_and_holds_no_key(tmp_path: Path) -> None:
    async with gateway(tmp_path, env=AUTH_ON) as client:
        answer = await client.get("/freshet/ui")  # open: the page holds no data
        assert answer.status_code == 200
        assert 'data-auth="on"' in answer.text
        assert 'data-admin-key="set"' in answer.text
        assert ADMIN not in answer.text
    (tmp_path / "closed").mkdir()
    async with gateway(tmp_path / "closed", env={"FRESHET_AUTH": "on"}) as client:
        assert 'data-admin-key="unset"' in (await client.get("/freshet/ui")).text
    (tmp_path / "off").mkdir()
    async with gateway(tmp_path / "off", env={"FRESHET_AUTH": "off"}) as client:
        assert 'data-auth="off"' in (await client.get("/freshet/ui")).text


def test_the_policy_hashes_the_page_s_script_and_style() -> None:
    body, policy = page(auth="on")
    for kind, pattern in (
        ("script", r"<script>(.*?)</script>"),
        ("style", r"<style>(.*?)</style>"),
    ):
        (text,) = re.findall(pattern, body, re.S)
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in policy
    assert "sessionStorage" in body
    assert "localStorage" not in body
