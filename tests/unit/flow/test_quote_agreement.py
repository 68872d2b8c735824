"""The router's quote agrees with the simulated card it quotes (issue #20): the queue is the
card's committed work (``BackendStatus.busy_s``), the first token comes after the adapter's
swap (when it is not loaded), the prefill and one decode step, as the card model times it;
a backend that reports no committed work keeps the estimate from running and waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.backend import BackendConfig, BackendStatus
from gateway.builtins.routers import CheapestFresh
from gateway.cost import ListPriceOnly, RequestShape, queue_wait, swap_wait
from gateway.flow.accounting import build_cost_model
from gateway.flow.decision import decide
from gateway.flow.fleet import Fleet
from gateway.plugins import Plugins
from gateway.routing import NO_NEED
from gateway.settings import load_settings
from tests.support.inprocess import wait_ready

CONFIG: dict[str, Any] = {
    "backends": [
        {
            "id": "asic",
            "type": "asic-sim",
            "knowledge_cutoff": "2023-12-01",
            "decode_tokens_per_s": 1000,
            "prefill_tokens_per_s": 10_000,
            "lora_slots": 1,
            "lora_swap_s": 0.25,
            "adapters": [{"name": "news"}, {"name": "legal"}],
        }
    ],
}
BASE = "llama-3.1-8b"


@pytest.fixture
def fleet_and_cost(tmp_path: Path) -> tuple[Fleet, Any]:
    path = tmp_path / "freshet.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    plugins = Plugins()
    fleet = Fleet(settings, plugins)
    model = build_cost_model(settings, plugins)
    cost = model.for_backend(fleet.get("asic"), settings.backends[0])
    return fleet, cost


@pytest.mark.asyncio
async def test_the_quote_is_the_card_models_timing(fleet_and_cost: tuple[Fleet, Any]) -> None:
    fleet, cost = fleet_and_cost
    backend: Any = fleet.get("asic")
    now = backend.clock.now()
    for _ in range(3):  # 1 running, 2 waiting: 3 x (5 ms + 200 ms) committed
        backend.model.admit(50, 200, None, now)
    status = await backend.status()
    for adapter in (None, "news"):
        shape = RequestShape(prompt_tokens=40, output_tokens=100, adapter=adapter)
        quote = cost.quote(shape, status)
        sim = backend.simulate(40, 100, backend.clock.now(), adapter)
        assert quote.queue_s == pytest.approx(sim.queue_s, abs=0.02)
        assert quote.ttft_s == pytest.approx(sim.ttft_s, abs=0.02)
        assert quote.duration_s == pytest.approx(sim.duration_s, abs=0.02)
    # The adapter not loaded pays its swap in the quote as on the card.
    news = cost.quote(RequestShape(prompt_tokens=40, output_tokens=100, adapter="news"), status)
    base = cost.quote(RequestShape(prompt_tokens=40, output_tokens=100), status)
    assert news.ttft_s - base.ttft_s == pytest.approx(0.25)
    assert news.usd_total > base.usd_total  # the swap holds the stream: it costs too


@pytest.mark.asyncio
async def test_the_router_prices_each_adapter_by_its_swap(
    fleet_and_cost: tuple[Fleet, Any],
) -> None:
    fleet, cost = fleet_and_cost
    backend: Any = fleet.get("asic")
    backend.model.admit(50, 20, "news", backend.clock.now())  # news is loaded now
    status = await backend.status()
    assert status.adapters_loaded == ("news",)
    deployments = list(fleet.catalog.resolve(BASE).deployments)
    decision = decide(
        BASE,
        deployments,
        RequestShape(prompt_tokens=40, output_tokens=100),
        NO_NEED,
        {"asic": status},
        {"asic": cost},
        frozenset(),
        CheapestFresh(),
        "cheapest-fresh",
        max_ttft_ms=400,  # the news request holds the stream ~0.28 s
    )
    quotes = {c.deployment.name: c.quote for c in (*decision.ordered, *decision.dropped)}
    legal = quotes[f"{BASE}:legal"]
    assert legal is not None
    assert quotes[BASE] == quotes[f"{BASE}:news"]  # loaded: no swap, the base's quote
    assert legal.ttft_s == pytest.approx(quotes[BASE].ttft_s + 0.25)  # type: ignore[union-attr]
    reasons = {c.deployment.name: c.dropped for c in decision.dropped}
    assert (reasons.get(f"{BASE}:legal") or "").startswith("ttft(")  # its swap is too slow


def test_without_committed_work_the_estimate_from_counts_stays() -> None:
    unknown = BackendStatus(healthy=True, running=2, waiting=3)
    assert queue_wait(unknown, service_s=1.0, slots=2) == pytest.approx(2.0)  # (2+3+1-2)/2
    assert queue_wait(BackendStatus(healthy=True, running=1), 1.0, 2) == 0.0
    known = BackendStatus(healthy=True, running=2, waiting=3, busy_s=0.7)
    assert queue_wait(known, service_s=1.0, slots=2) == 0.7
    shape = RequestShape(prompt_tokens=1, output_tokens=1, adapter="x")
    assert swap_wait(shape, BackendStatus(healthy=True, adapter_swap_s=0.1)) == 0.0  # unknown
    loaded = BackendStatus(healthy=True, adapters_loaded=("y",), adapter_swap_s=0.1)
    assert swap_wait(shape, loaded) == 0.1
    assert swap_wait(RequestShape(prompt_tokens=1, output_tokens=1), loaded) == 0.0


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    config = {
        **CONFIG,
        "backends": [
            {
                **CONFIG["backends"][0],
                "adapters": [{"name": "news", "knowledge_cutoff": "2025-03-01"}],
            }
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    async with AsyncTestClient(app=create_app(settings, Runtime(settings))) as client:
        await wait_ready(client)
        yield client


@pytest.mark.asyncio
async def test_the_route_names_the_adapter_chosen_and_prices_its_swap(
    gateway: AsyncTestClient[Any],
) -> None:
    fresh: dict[str, str | int] = {
        "model": BASE,
        "min_knowledge_cutoff": "2025-01-01",
        "max_tokens": 4,
    }
    view = (await gateway.get("/freshet/route", params=fresh)).json()
    assert view["chosen_deployment"] == f"asic/{BASE}:news"
    swap = view["candidates"][0]["quote"]
    base = (await gateway.get("/freshet/route", params={"model": BASE, "max_tokens": 4})).json()
    assert base["chosen_deployment"] == "asic"
    no_swap = base["candidates"][0]["quote"]
    assert swap["ttft_s"] - no_swap["ttft_s"] == pytest.approx(0.25)  # not loaded yet
    body = {
        "model": BASE,
        "messages": [{"role": "user", "content": "news?"}],
        "max_tokens": 4,
        "freshness": {"min_knowledge_cutoff": "2025-01-01"},
    }
    served = await gateway.post("/v1/chat/completions", json=body)
    assert served.status_code == 200, served.text
    assert f"chosen=asic/{BASE}:news" in served.headers["x-freshet-route"]
    # Loaded now: the adapter's quote is the base's.
    again = (await gateway.get("/freshet/route", params=fresh)).json()["candidates"][0]["quote"]
    assert again["ttft_s"] < swap["ttft_s"] - 0.2


def test_without_a_cost_plugin_the_quote_still_counts_the_wait() -> None:
    """List prices only (no profile to time a request by): the wait the backend reports."""
    cost = ListPriceOnly({}).for_backend(
        None,  # type: ignore[arg-type]  # the list-price model reads only the config
        BackendConfig(id="paid", type="x", list_price={"input_per_mtok": 1.0}),
    )
    shape = RequestShape(prompt_tokens=1000, output_tokens=10, adapter="a")
    status = BackendStatus(
        healthy=True, busy_s=1.5, adapters_loaded=(), adapter_swap_s=0.5, adapter_slots=1
    )
    quote = cost.quote(shape, status)
    assert (quote.queue_s, quote.ttft_s) == (2.0, 2.0)
    assert quote.usd_list == pytest.approx(1000 / 1e6)
    assert cost.quote(shape, BackendStatus(healthy=True)).ttft_s == 0.0
