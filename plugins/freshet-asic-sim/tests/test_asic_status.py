"""What the card tells the router (issue #20): the work it has committed (``busy_s``: when
a stream frees for a request admitted now, its queue counted) and its adapters (loaded,
swap time, slots), read from the card model's plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from freshet_asic_sim import AsicSimBackend

from gateway.plugin_api import BackendConfig, BackendStatus, Deployment

SERVICE_S = 100 / 100_000 + 1600 / 16_000  # prefill + decode of a 100/1600 request: 101 ms
# Wall seconds may pass between admitting and asking; at time_scale 1 a busy machine may
# take a few milliseconds.
SLACK_S = 0.05


@pytest.mark.asyncio
async def test_an_idle_card_is_free_now(make_backend: Callable[..., AsicSimBackend]) -> None:
    backend = make_backend(lora_slots=3)
    status = await backend.status()
    assert status.busy_s == 0.0
    assert status.adapters_loaded == ()
    assert status.adapter_swap_s == pytest.approx(0.010)
    assert status.adapter_slots == 3


@pytest.mark.asyncio
async def test_busy_s_counts_what_runs_and_what_waits(
    make_backend: Callable[..., AsicSimBackend],
) -> None:
    backend = make_backend()  # one card, one stream
    model, clock = backend.model, backend.clock
    model.admit(100, 1600, None, clock.now())
    one = await backend.status()
    assert (one.running, one.waiting) == (1, 0)
    assert SERVICE_S - SLACK_S < (one.busy_s or 0.0) <= SERVICE_S
    model.admit(100, 1600, None, clock.now())
    model.admit(100, 1600, None, clock.now())
    three = await backend.status()
    assert (three.running, three.waiting) == (1, 2)
    # The running request's rest and two whole ones queued before a new one.
    assert 3 * SERVICE_S - SLACK_S < (three.busy_s or 0.0) <= 3 * SERVICE_S


@pytest.mark.asyncio
async def test_busy_s_is_the_stream_that_frees_first(
    make_backend: Callable[..., AsicSimBackend],
) -> None:
    backend = make_backend(streams_per_card=2)
    model, clock = backend.model, backend.clock
    model.admit(100, 1600, None, clock.now())  # 101 ms
    assert (await backend.status()).busy_s == 0.0  # the other stream is free
    model.admit(100, 160, None, clock.now())  # 11 ms on the second stream
    short = 100 / 100_000 + 160 / 16_000
    assert 0.0 < ((await backend.status()).busy_s or 0.0) <= short


@pytest.mark.asyncio
async def test_busy_s_is_in_wall_seconds(make_backend: Callable[..., AsicSimBackend]) -> None:
    backend = make_backend(time_scale=10.0)  # ten times slower than real time
    backend.model.admit(100, 1600, None, backend.clock.now())
    status = await backend.status()
    assert 10 * SERVICE_S - SLACK_S < (status.busy_s or 0.0) <= 10 * SERVICE_S
    assert status.adapter_swap_s == pytest.approx(0.100)


@pytest.mark.asyncio
async def test_adapters_loaded_include_those_planned(
    make_backend: Callable[..., AsicSimBackend],
) -> None:
    backend = make_backend(
        adapters=[{"name": "news"}, {"name": "legal"}, {"name": "code"}], lora_slots=2
    )
    model, clock = backend.model, backend.clock
    model.admit(10, 16, "news", clock.now())
    model.admit(10, 16, "legal", clock.now())  # waits, and will be loaded when it starts
    assert (await backend.status()).adapters_loaded == ("legal", "news")
    model.admit(10, 16, "code", clock.now())  # two slots: news is evicted by then
    assert (await backend.status()).adapters_loaded == ("code", "legal")
    # What the status says is what the card model does to a request arriving now.
    assert backend.simulate(10, 16, clock.now(), "news").swap_s == pytest.approx(0.010)
    assert backend.simulate(10, 16, clock.now(), "code").swap_s == 0.0


class BusyTwin:
    """A functional twin with two seconds of work committed."""

    id = "cpu"
    deployments = (Deployment(backend_id="cpu", model="m", knowledge_cutoff=None, max_context=64),)

    async def status(self) -> BackendStatus:
        return BackendStatus(healthy=True, running=1, busy_s=2.0)


class TwinFleet:
    def get(self, backend_id: str) -> Any:
        assert backend_id == "cpu"
        return BusyTwin()


@pytest.mark.asyncio
async def test_a_card_with_a_twin_is_busy_while_its_twin_is() -> None:
    """Its text comes from the twin, so a request waits for the twin's work too."""
    config = BackendConfig(id="asic", type="asic-sim", params={"twin": "cpu"}, source="test")
    backend = AsicSimBackend(config, TwinFleet())
    assert (await backend.status()).busy_s == 2.0
    backend.model.admit(100, 16_000 * 3, None, backend.clock.now())  # 3 s on the card
    assert 2.9 < ((await backend.status()).busy_s or 0.0) <= 3.001
