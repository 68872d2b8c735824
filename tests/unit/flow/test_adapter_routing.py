"""LoRA adapters keep an etched chip fresher: a group that names a backend, and a request
for a base model, also reach the backend's adapter deployments (issue #20). The issue's
own fleet: an asic-sim card frozen at 2023-12-01 with a news adapter at 2025-03-01, and a
deterministic backend at 2024-06-01."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.settings import load_settings
from tests.support.inprocess import wait_ready

BACKENDS = [
    {
        "id": "asic",
        "type": "asic-sim",
        "knowledge_cutoff": "2023-12-01",
        "time_scale": 0.001,
        "adapters": [{"name": "news-2025", "knowledge_cutoff": "2025-03-01"}],
    },
    {"id": "det", "type": "deterministic", "model": "det-1", "knowledge_cutoff": "2024-06-01"},
]
GROUPS = {"auto": ["asic", "det"]}
BASE = "llama-3.1-8b"
ADAPTER = f"{BASE}:news-2025"


async def _client(tmp_path: Any, routing: dict[str, Any]) -> AsyncIterator[AsyncTestClient[Any]]:
    path = tmp_path / "c.yaml"
    config = {"backends": BACKENDS, "groups": GROUPS, "routing": routing}
    path.write_bytes(msgspec.yaml.encode(config))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(settings, runtime)) as client:
        await wait_ready(client)
        yield client


@pytest_asyncio.fixture
async def gateway(tmp_path: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    async for client in _client(tmp_path, {}):
        yield client


@pytest_asyncio.fixture
async def by_name_only(tmp_path: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    async for client in _client(tmp_path, {"adapters_by_name_only": True}):
        yield client


def _chat(model: str, cutoff: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "what happened lately?"}],
        "max_tokens": 4,
    }
    if cutoff is not None:
        body["freshness"] = {"min_knowledge_cutoff": cutoff}
    return body


@pytest.mark.asyncio
async def test_the_adapter_is_listed(gateway: AsyncTestClient[Any]) -> None:
    models = {m["id"] for m in (await gateway.get("/v1/models")).json()["data"]}
    assert {BASE, ADAPTER, "auto", "det-1"} <= models


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ["auto", BASE])
async def test_group_and_base_model_reach_the_fresh_adapter(
    gateway: AsyncTestClient[Any], model: str
) -> None:
    resp = await gateway.post("/v1/chat/completions", json=_chat(model, "2025-01-01"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-freshet-backend"] == "asic"
    assert resp.headers["x-freshet-knowledge-cutoff"] == "2025-03-01"
    route = resp.headers["x-freshet-route"]
    assert f"chosen=asic/{ADAPTER}" in route
    assert "asic:freshness(cutoff 2023-12-01)" in route  # the frozen base, dropped


@pytest.mark.asyncio
async def test_without_a_need_the_base_still_wins_the_tie(gateway: AsyncTestClient[Any]) -> None:
    resp = await gateway.post("/v1/chat/completions", json=_chat(BASE, None))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-freshet-knowledge-cutoff"] == "2023-12-01"
    route = resp.headers["x-freshet-route"]
    assert "chosen=asic;" in route
    # One deployment per backend in the fallback list: the adapter would refuse as the
    # base does (queue, context), so the retry budget goes to another backend.
    assert f"asic/{ADAPTER}:same_backend" in route


@pytest.mark.asyncio
async def test_a_group_falls_back_to_another_backend_not_to_the_same_card(
    gateway: AsyncTestClient[Any],
) -> None:
    resp = await gateway.get("/freshet/route", params={"model": "auto"})
    view = resp.json()
    assert sorted([view["chosen"], *view["fallbacks"]]) == ["asic", "det"]
    reasons = {c["deployment"]: c["reason"] for c in view["candidates"]}
    assert reasons == {BASE: None, "det-1": None, ADAPTER: "same_backend"}


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ["auto", BASE, ADAPTER])
async def test_422_only_when_nothing_with_adapters_is_fresh_enough(
    gateway: AsyncTestClient[Any], model: str
) -> None:
    resp = await gateway.post("/v1/chat/completions", json=_chat(model, "2025-06-01"))
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "freshness_unsatisfiable"
    assert "the freshest available is 2025-03-01" in error["message"]


@pytest.mark.asyncio
async def test_naming_model_colon_adapter_is_unchanged(gateway: AsyncTestClient[Any]) -> None:
    resp = await gateway.post("/v1/chat/completions", json=_chat(ADAPTER, "2025-01-01"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-freshet-knowledge-cutoff"] == "2025-03-01"
    assert "candidates=1" in resp.headers["x-freshet-route"]


@pytest.mark.asyncio
async def test_the_route_dry_run_shows_the_adapter(gateway: AsyncTestClient[Any]) -> None:
    resp = await gateway.get(
        "/freshet/route", params={"model": "auto", "min_knowledge_cutoff": "2025-01-01"}
    )
    assert resp.status_code == 200, resp.text
    view = resp.json()
    assert view["chosen"] == "asic"
    by_deployment = {c["deployment"]: c for c in view["candidates"]}
    assert set(by_deployment) == {BASE, ADAPTER, "det-1"}
    assert by_deployment[ADAPTER]["eligible"] is True
    assert by_deployment[ADAPTER]["rank"] == 0
    assert by_deployment[ADAPTER]["knowledge_cutoff"] == "2025-03-01"
    assert by_deployment[BASE]["reason"] == "freshness(cutoff 2023-12-01)"


@pytest.mark.asyncio
@pytest.mark.parametrize(("model", "freshest"), [("auto", "2024-06-01"), (BASE, "2023-12-01")])
async def test_adapters_by_name_only_keeps_them_out_of_groups_and_base_names(
    by_name_only: AsyncTestClient[Any], model: str, freshest: str
) -> None:
    resp = await by_name_only.post("/v1/chat/completions", json=_chat(model, "2025-01-01"))
    assert resp.status_code == 422, resp.text
    assert f"the freshest available is {freshest}" in resp.json()["error"]["message"]
    named = await by_name_only.post("/v1/chat/completions", json=_chat(ADAPTER, "2025-01-01"))
    assert named.status_code == 200, named.text


def test_adapters_by_name_only_must_be_a_boolean(tmp_path: Any) -> None:
    from gateway.errors import ConfigError

    path = tmp_path / "c.yaml"
    config = {"backends": BACKENDS, "routing": {"adapters_by_name_only": "sometimes"}}
    path.write_bytes(msgspec.yaml.encode(config))
    with pytest.raises(ConfigError, match="adapters_by_name_only"):
        load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})


class _Stub:
    def __init__(self, *deployments: Any) -> None:
        self.deployments = deployments


@pytest.mark.parametrize("by_name", [False, True])
def test_vllm_adapters_join_the_catalog_the_same_way(by_name: bool) -> None:
    import datetime as dt

    from freshet_vllm.params import AdapterSpec, build_deployments

    from gateway.backend import BackendConfig
    from gateway.flow.fleet import Catalog

    config = BackendConfig(
        id="gpu", type="vllm", knowledge_cutoff=dt.date(2023, 12, 1), index=0, source=None
    )
    news = AdapterSpec(name="news", knowledge_cutoff=dt.date(2025, 3, 1))
    gpu = _Stub(*build_deployments(config, "llama", 8192, [news]))
    backends: dict[str, Any] = {"gpu": gpu}
    catalog = Catalog(backends, {"chat": ["gpu"]}, adapters_by_name_only=by_name)
    expanded = ["llama", "llama:news"] if not by_name else ["llama"]
    assert [d.name for d in catalog.resolve("chat").deployments] == expanded
    assert [d.name for d in catalog.resolve("llama").deployments] == expanded
    assert [d.name for d in catalog.resolve("llama:news").deployments] == ["llama:news"]
    assert catalog.resolve("chat").knowledge_cutoff == (
        dt.date(2023, 12, 1) if by_name else dt.date(2025, 3, 1)
    )
