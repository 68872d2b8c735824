from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from gateway import protocol as p
from gateway.api.app import create_app
from gateway.api.edge import request_options
from gateway.api.runtime import Runtime
from gateway.errors import ConfigError, InvalidRequest
from gateway.flow.freshness import resolve_need
from gateway.settings import HealthSettings, load_settings
from gateway.state.health import LocalHealth
from tests.support.inprocess import wait_ready

TODAY = dt.date(2026, 11, 23)


def test_circuit_opens_half_opens_and_closes() -> None:
    now = [0.0]
    settings = HealthSettings(consecutive_failures=3, ejection_s=5)
    health = LocalHealth(settings, clock=lambda: now[0])
    for _ in range(2):
        health.failure("a")
    assert health.available("a")  # two failures: still closed
    health.failure("a")
    assert not health.available("a")
    assert health.circuit("a").state == "open"
    now[0] = 5.0
    assert health.available("a")  # half-open: probes go through
    assert health.circuit("a").state == "half_open"
    health.failure("a")  # the probe failed: open again, for twice as long
    assert not health.available("a")
    now[0] = 14.0
    assert not health.available("a")
    now[0] = 15.0
    assert health.available("a")
    health.success("a")
    assert health.circuit("a").state == "closed"
    assert health.circuit("a").failures == 0


def test_need_precedence_body_header_key_group() -> None:
    body = p.Freshness(min_knowledge_cutoff=dt.date(2024, 1, 1))
    headers = p.Freshness(min_knowledge_cutoff=dt.date(2024, 2, 1))
    key = p.Freshness(max_staleness_days=365)
    group = p.Freshness(min_knowledge_cutoff=dt.date(2023, 1, 1))
    assert resolve_need(body, headers, key, group, TODAY).source == "body"
    assert resolve_need(None, headers, key, group, TODAY).min_cutoff == dt.date(2024, 2, 1)
    assert resolve_need(None, None, key, group, TODAY).min_cutoff == dt.date(2025, 11, 23)
    assert resolve_need(None, None, None, group, TODAY).source == "group"
    assert resolve_need(None, None, None, None, TODAY).min_cutoff is None


def test_both_body_fields_take_the_stricter() -> None:
    spec = p.Freshness(min_knowledge_cutoff=dt.date(2020, 1, 1), max_staleness_days=10)
    assert resolve_need(spec, None, today=TODAY).min_cutoff == dt.date(2026, 11, 13)


def test_bad_headers_name_the_header() -> None:
    for value in ("-1", "\u00b2", "1e3", ""):
        with pytest.raises(InvalidRequest) as info:
            request_options({"x-freshet-max-staleness-days": value})
        assert info.value.param == "x-freshet-max-staleness-days"


def test_a_staleness_past_the_calendar_needs_nothing_a_model_can_miss() -> None:
    need = resolve_need(p.Freshness(max_staleness_days=10**12), None, today=TODAY)
    assert need.min_cutoff == dt.date.min
    options = request_options({"x-freshet-max-staleness-days": "99999999999"})
    assert options.freshness is not None
    assert resolve_need(None, options.freshness, today=TODAY).min_cutoff == dt.date.min


def _config(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})


FLEET = """
backends:
  - {id: a, type: deterministic, model: ma, knowledge_cutoff: 2024-01-01,
     profile: {watts_active: 1, decode_tokens_per_s: 100}}
  - {id: b, type: deterministic, model: mb, knowledge_cutoff: 2025-01-01,
     profile: {watts_active: 50, decode_tokens_per_s: 100}}
groups:
  cheap: [a, b]
  rr: {backends: [a, b], router: round-robin}
  fresh: {backends: [a, b], freshness: {min_knowledge_cutoff: 2024-06-01}}
"""


@pytest.mark.asyncio
async def test_groups_select_their_router_and_default_need(tmp_path: Path) -> None:
    settings = _config(tmp_path, FLEET)
    assert settings.group_policies["rr"].router == "round-robin"
    async with AsyncTestClient(app=create_app(settings, Runtime(settings))) as client:
        await wait_ready(client)

        async def served(model: str) -> str:
            resp = await client.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 2,
                },
            )
            assert resp.status_code == 200, resp.text
            return str(resp.headers["x-freshet-backend"])

        assert [await served("cheap") for _ in range(3)] == ["a", "a", "a"]
        assert sorted([await served("rr") for _ in range(4)]) == ["a", "a", "b", "b"]
        assert await served("fresh") == "b"  # the group's own need drops a


def test_unknown_router_is_a_config_error(tmp_path: Path) -> None:
    settings = _config(tmp_path, FLEET.replace("router: round-robin", "router: fastest"))
    with pytest.raises(ConfigError, match="unknown router 'fastest'") as info:
        Runtime(settings)
    assert info.value.key == "groups.rr.router"
