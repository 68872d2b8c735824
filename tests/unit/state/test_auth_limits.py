"""API keys, auth, per-key rate limits and budgets, in-process (the embedded default's store)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.errors import RateLimited
from gateway.protocol import Freshness
from gateway.settings import SharedSettings, load_settings
from gateway.state.auth import Auth, is_loopback
from gateway.state.keys import ApiKey, KeyRing, new_key
from gateway.state.keys_sqlite import SQLiteKeyStore
from gateway.state.limits import LocalLimits
from tests.support.inprocess import wait_ready

ADMIN = "admin-secret"
USD_PER_TOKEN = 0.001  # list price of every output token below; input and energy are free
FREE = {"watts_idle": 0, "watts_active": 0, "capex_per_hour": 0}
CONFIG: dict[str, Any] = {
    "backends": [
        {
            "id": "old",
            "type": "deterministic",
            "model": "m-old",
            "knowledge_cutoff": "2023-12-01",
            "profile": FREE,
            "energy": {"meter": "model"},
            "list_price": {"output_per_mtok": USD_PER_TOKEN * 1e6},
        },
        {
            "id": "new",
            "type": "deterministic",
            "model": "m-new",
            "knowledge_cutoff": "2025-03-01",
            "profile": FREE,
            "energy": {"meter": "model"},
            "list_price": {"output_per_mtok": USD_PER_TOKEN * 1e6 * 10},
        },
        {
            "id": "broken",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-broken",
            "fail_before_first": True,
            "profile": FREE,
            "energy": {"meter": "model"},
            "list_price": {"output_per_mtok": USD_PER_TOKEN * 1e6},
        },
    ],
    "groups": {"g": ["old", "new"], "broken-then-new": ["broken", "new"]},
    "limits": {"window_s": 60},
}


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}


async def _make_key(tmp_path: Path, name: str, **limits: Any) -> str:
    store = SQLiteKeyStore(tmp_path / "data")
    secret, key = new_key(name, **limits)
    await store.add(key)
    await store.aclose()
    return secret


@pytest_asyncio.fixture
async def gateway(
    tmp_path: Path,
) -> AsyncIterator[tuple[AsyncTestClient[Any], Runtime, dict[str, str]]]:
    secrets = {
        "plain": await _make_key(tmp_path, "plain"),
        "rpm2": await _make_key(tmp_path, "rpm2", rpm=2),
        "tpm": await _make_key(tmp_path, "tpm", tpm=100),
        "budget": await _make_key(tmp_path, "budget", budget_usd=0.0035),
        "roomy": await _make_key(tmp_path, "roomy", budget_usd=1.0),
        "fresh": await _make_key(
            tmp_path, "fresh", freshness=Freshness(min_knowledge_cutoff=dt.date(2025, 1, 1))
        ),
    }
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(CONFIG))
    env = {"FRESHET_DATA_DIR": str(tmp_path / "data"), "FRESHET_ADMIN_KEY": ADMIN}
    settings = load_settings(str(path), env=env)
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(settings, runtime)) as client:
        await wait_ready(client)
        yield client, runtime, secrets


def _auth(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


@pytest.mark.asyncio
async def test_v1_needs_a_valid_key_and_admin_routes_the_admin_key(gateway: Any) -> None:
    client, runtime, secrets = gateway
    assert runtime.auth.state == "on"  # keys exist, so auto turns auth on
    missing = await client.post("/v1/chat/completions", json=_chat())
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert "x-request-id" in missing.headers
    bad = await client.post("/v1/chat/completions", json=_chat(), headers=_auth("fk-nope"))
    assert bad.status_code == 401
    assert (await client.get("/v1/models")).status_code == 401
    ok = await client.post("/v1/chat/completions", json=_chat(), headers=_auth(secrets["plain"]))
    assert ok.status_code == 200, ok.text
    for path in ("/health", "/ready"):
        assert (await client.get(path)).status_code == 200
    assert (await client.get("/freshet/cost/report")).status_code == 401
    user_key = await client.get("/freshet/cost/report", headers=_auth(secrets["plain"]))
    assert user_key.status_code == 401
    report = await client.get("/freshet/cost/report?group_by=key", headers=_auth(ADMIN))
    assert report.status_code == 200
    assert [row["value"] for row in report.json()["rows"]] == ["plain"]  # ctx.key is the name
    state = (await client.get("/freshet/state", headers=_auth(ADMIN))).json()
    assert state["store"] == "local"
    assert state["limits"] == "per-process"


@pytest.mark.asyncio
async def test_over_rpm_is_429_with_retry_after(gateway: Any) -> None:
    client, _, secrets = gateway
    headers = _auth(secrets["rpm2"])
    codes = [
        (await client.post("/v1/chat/completions", json=_chat(), headers=headers)).status_code
        for _ in range(2)
    ]
    assert codes == [200, 200]
    over = await client.post("/v1/chat/completions", json=_chat(), headers=headers)
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(over.headers["retry-after"]) <= 60
    # Other keys have their own counters.
    plain = await client.post("/v1/chat/completions", json=_chat(), headers=_auth(secrets["plain"]))
    assert plain.status_code == 200


@pytest.mark.asyncio
async def test_tpm_counts_prompt_and_max_tokens(gateway: Any) -> None:
    client, _, secrets = gateway
    headers = _auth(secrets["tpm"])
    big = await client.post("/v1/chat/completions", json=_chat(max_tokens=200), headers=headers)
    assert big.status_code == 429
    small = await client.post("/v1/chat/completions", json=_chat(max_tokens=2), headers=headers)
    assert small.status_code == 200


@pytest.mark.asyncio
async def test_budget_reserves_the_quote_and_402_when_exhausted(gateway: Any) -> None:
    client, runtime, secrets = gateway
    headers = _auth(secrets["budget"])
    first = await client.post("/v1/chat/completions", json=_chat(), headers=headers)
    assert first.status_code == 200
    assert first.json()["usage"]["cost"] == pytest.approx(2 * USD_PER_TOKEN)
    # $0.002 spent; the next quote ($0.002) would take it past $0.0035.
    second = await client.post("/v1/chat/completions", json=_chat(), headers=headers)
    assert second.status_code == 402
    assert second.json()["error"]["code"] == "insufficient_quota"
    # A cheaper request still fits: the budget counts the real spend, not the refused quote.
    third = await client.post("/v1/chat/completions", json=_chat(max_tokens=1), headers=headers)
    assert third.status_code == 200
    usd, _ = runtime.shared.limits.local.spent("budget")
    assert usd == pytest.approx(3 * USD_PER_TOKEN)


@pytest.mark.asyncio
async def test_a_failed_request_gives_its_reservation_back(gateway: Any) -> None:
    client, runtime, secrets = gateway
    headers = _auth(secrets["budget"])
    failed = await client.post(
        "/v1/chat/completions", json=_chat(model="m-broken"), headers=headers
    )
    assert failed.status_code in (502, 503)
    local = runtime.shared.limits.local
    assert local.spent("budget") == (0.0, 0.0)
    assert local._keys["budget"].usd_reserved == 0.0
    ok = await client.post("/v1/chat/completions", json=_chat(), headers=headers)
    assert ok.status_code == 200


@pytest.mark.asyncio
async def test_streamed_requests_settle_too(gateway: Any) -> None:
    client, runtime, secrets = gateway
    headers = _auth(secrets["budget"])
    resp = await client.post("/v1/chat/completions", json=_chat(stream=True), headers=headers)
    assert resp.status_code == 200
    assert resp.text.rstrip().endswith("data: [DONE]")
    usd, _ = runtime.shared.limits.local.spent("budget")
    assert usd == pytest.approx(2 * USD_PER_TOKEN)


@pytest.mark.asyncio
async def test_the_keys_freshness_is_the_default_need(gateway: Any) -> None:
    client, _, secrets = gateway
    plain = await client.post("/v1/chat/completions", json=_chat(), headers=_auth(secrets["plain"]))
    assert plain.headers["x-freshet-backend"] == "old"  # cheapest
    fresh = await client.post("/v1/chat/completions", json=_chat(), headers=_auth(secrets["fresh"]))
    assert fresh.headers["x-freshet-backend"] == "new"
    # The body's need is more specific than the key's.
    body = _chat(freshness={"min_knowledge_cutoff": "2023-01-01"})
    loose = await client.post("/v1/chat/completions", json=body, headers=_auth(secrets["fresh"]))
    assert loose.headers["x-freshet-backend"] == "old"


@pytest.mark.asyncio
async def test_revoked_key_is_refused_after_the_refresh(gateway: Any, tmp_path: Path) -> None:
    client, runtime, secrets = gateway
    headers = _auth(secrets["plain"])
    assert (
        await client.post("/v1/chat/completions", json=_chat(), headers=headers)
    ).status_code == 200
    store = SQLiteKeyStore(tmp_path / "data")  # as `freshet keys revoke` does
    assert await store.revoke("plain")
    await store.aclose()
    await runtime.auth.keys.refresh()  # what the 1-second refresh task does
    resp = await client.post("/v1/chat/completions", json=_chat(), headers=headers)
    assert resp.status_code == 401
    assert "revoked" in resp.json()["error"]["message"]


def test_local_limits_windows_and_joules() -> None:
    now = [1000.0 * 60 + 5]
    limits = LocalLimits(window_s=60, clock=lambda: now[0])
    key = ApiKey(name="k", digest="d", created=0, rpm=2, budget_joules=10.0)
    a = limits.admit(key, 10, 0.0, 4.0)
    limits.admit(key, 10, 0.0, 4.0)
    with pytest.raises(RateLimited) as over:
        limits.admit(key, 10, 0.0, 1.0)
    assert over.value.retry_after_s == pytest.approx(55)
    now[0] += 60  # next window: requests reset, the day's joules do not
    with pytest.raises(RateLimited):  # 8 J reserved + 4 > 10, but nothing settled yet: 429
        limits.admit(key, 10, 0.0, 4.0)
    limits.settle(a, 0.0, 1.0, 10)  # really cost 1 J, not 4
    limits.admit(key, 10, 0.0, 4.0)
    assert limits.spent("k") == (0.0, 1.0)


@pytest.mark.parametrize(
    ("host", "keys", "mode", "state"),
    [
        ("127.0.0.1", 0, "auto", "off"),
        ("localhost", 0, "auto", "off"),
        ("::1", 0, "auto", "off"),
        ("0.0.0.0", 0, "auto", "on"),
        ("127.0.0.1", 1, "auto", "on"),
        ("127.0.0.1", 0, "on", "on"),
        ("0.0.0.0", 1, "off", "off"),
    ],
)
def test_auth_auto(tmp_path: Path, host: str, keys: int, mode: str, state: str) -> None:
    ring = KeyRing(SQLiteKeyStore(tmp_path))
    if keys:
        _, key = new_key("x")
        ring._by_digest[key.digest] = key
    ring._version = "1"  # read
    settings = SharedSettings(auth=mode)  # type: ignore[arg-type]
    assert Auth(settings, host, ring).decide() == state


@pytest.mark.asyncio
async def test_redis_down_at_start_serves_with_auth_on(tmp_path: Path) -> None:
    """Keys unreadable: `auto` must not open the gateway; requests are still served."""
    from tests.support.server import free_port

    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(CONFIG))
    env = {
        "FRESHET_DATA_DIR": str(tmp_path / "data"),
        "FRESHET_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens
        "FRESHET_ADMIN_KEY": ADMIN,
    }
    settings = load_settings(str(path), env=env)
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(settings, runtime)) as client:
        await wait_ready(client)
        assert runtime.auth.state == "on"
        assert (await client.post("/v1/chat/completions", json=_chat())).status_code == 401
        state = (await client.get("/freshet/state", headers=_auth(ADMIN))).json()
        assert state["store"] == "redis"
        assert state["redis"]["up"] is False


def test_loopback() -> None:
    assert is_loopback("127.0.0.5")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("example")


@pytest.mark.asyncio
async def test_a_new_key_works_at_once(tmp_path: Path) -> None:
    store = SQLiteKeyStore(tmp_path)
    ring = KeyRing(store, refresh_s=3600)
    await ring.refresh()
    secret, key = new_key("late")
    other = SQLiteKeyStore(tmp_path)
    await other.add(key)
    from gateway.state.keys import digest

    found = await ring.lookup(digest(secret))
    assert found is not None
    assert found.name == "late"
    await asyncio.gather(other.aclose(), store.aclose())


@pytest.mark.asyncio
async def test_the_reservation_follows_a_dearer_fallback(gateway: Any) -> None:
    client, runtime, secrets = gateway
    limits = runtime.admission.limits
    held: list[float] = []
    reprice = limits.reprice

    def spy(r: Any, usd: float, joules: float) -> None:
        reprice(r, usd, joules)
        held.append(r.usd)

    limits.reprice = spy
    body = {**_chat(), "model": "broken-then-new"}
    resp = await client.post("/v1/chat/completions", json=body, headers=_auth(secrets["roomy"]))
    assert resp.status_code == 200
    assert resp.headers["x-freshet-backend"] == "new"
    # It was admitted on the quote of "broken" (the first choice), then held the quote of
    # "new" that served (2 tokens at 10x); settled at the real cost, nothing stays held.
    assert held == [pytest.approx(2 * USD_PER_TOKEN * 10)]
    counters = limits.local._keys["roomy"]
    assert counters.usd_reserved == pytest.approx(0.0)
    assert counters.usd_spent == pytest.approx(2 * USD_PER_TOKEN * 10)


def test_repricing_moves_what_is_held() -> None:
    limits = LocalLimits(60.0)
    key = ApiKey(name="k", digest="d", created=0, budget_usd=1.0)
    r = limits.admit(key, 10, 0.1, 1.0)
    limits.reprice(r, 0.3, 2.0)
    c = limits._keys["k"]
    assert (c.usd_reserved, c.j_reserved) == (pytest.approx(0.3), pytest.approx(2.0))
    limits.settle(r, 0.25, 1.5, 10)
    assert (c.usd_reserved, c.usd_spent) == (pytest.approx(0.0), pytest.approx(0.25))
