"""Discovery through the entry point, configuration errors, profile and status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from freshet_asic_sim import AsicSimBackend

from gateway.flow.fleet import Fleet
from gateway.plugin_api import Backend, ConfigError
from gateway.plugins import Plugins


def test_backend_type_is_found_through_the_entry_point() -> None:
    plugins = Plugins()
    types = plugins.backend_types()
    assert types["asic-sim"] is AsicSimBackend
    assert plugins.backend_type_owners()["asic-sim"] == "asic-sim"
    info = {p.name: p for p in plugins.info()}
    assert info["asic-sim"].distribution == "freshet-asic-sim"
    assert info["asic-sim"].hooks == ["register_backend_types", "register_simulators"]
    assert not info["asic-sim"].builtin


def test_not_found_when_the_plugin_is_blocked() -> None:
    assert "asic-sim" not in Plugins(blocked=["asic-sim"]).backend_types()


def test_defaults_profile_and_deployment(make_backend: Callable[..., AsicSimBackend]) -> None:
    backend = make_backend()
    assert isinstance(backend, Backend)
    assert backend.kind == "asic"
    p = backend.params
    assert (p.decode_tokens_per_s, p.prefill_tokens_per_s) == (16_000, 100_000)
    assert (p.cards, p.streams_per_card, p.max_context) == (1, 1, 2048)
    assert (p.watts_active, p.watts_idle, p.host_watts) == (200, 80, 50)
    assert (p.lora_slots, p.lora_swap_s, p.time_scale) == (4, 0.010, 1.0)
    profile = backend.profile
    assert profile.kind == "asic"
    assert (profile.watts_active, profile.watts_idle) == (250, 130)  # card + host share
    assert profile.capex_per_hour == pytest.approx(0.45)
    assert (profile.max_concurrency, profile.max_context) == (1, 2048)
    assert profile.decode_tokens_per_s == 16_000
    [deployment] = backend.deployments
    assert (deployment.model, deployment.adapter, deployment.backend_id) == (
        "llama-3.1-8b",
        None,
        "asic",
    )
    assert str(deployment.knowledge_cutoff) == "2023-12-01"


def test_profile_scales_with_cards(make_backend: Callable[..., AsicSimBackend]) -> None:
    profile = make_backend(cards=10, streams_per_card=2).profile
    assert profile.max_concurrency == 20
    assert profile.watts_active == 2500  # the vendor's 10-card server
    assert profile.capex_per_hour == pytest.approx(4.5)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"decode_tokens_per_s": 0}, "backends[0].decode_tokens_per_s"),
        ({"cards": "many"}, "backends[0].cards"),
        ({"time_scael": 0.1}, "backends[0]"),
        ({"twin": "asic"}, "backends[0].twin"),
        ({"capabilities": ["tools"]}, "backends[0].capabilities"),  # text only (#19)
    ],
)
def test_bad_params_name_their_key(
    make_fleet: Callable[[dict[str, Any]], Fleet], params: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as error:
        make_fleet(
            {
                "backends": [
                    {"id": "asic", "type": "asic-sim", "knowledge_cutoff": "unknown", **params}
                ]
            }
        )
    assert error.value.key is not None
    assert error.value.key.startswith(key)


def test_bad_adapters_name_their_entry(make_fleet: Callable[[dict[str, Any]], Fleet]) -> None:
    with pytest.raises(ConfigError) as error:
        make_fleet(
            {
                "backends": [
                    {
                        "id": "asic",
                        "type": "asic-sim",
                        "knowledge_cutoff": "unknown",
                        "adapters": [{"name": "a"}, {"name": "a"}],
                    }
                ]
            }
        )
    assert error.value.key == "backends[0].adapters[1]"
    with pytest.raises(ConfigError) as error:
        make_fleet(
            {
                "backends": [
                    {
                        "id": "asic",
                        "type": "asic-sim",
                        "knowledge_cutoff": "unknown",
                        "adapters": [{"cutoff": "x"}],
                    }
                ]
            }
        )
    assert error.value.key == "backends[0].adapters[0]"


def test_an_unknown_twin_is_a_config_error_at_load(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    """Not a card that never gets ready (/ready 503 forever): the fleet is not built."""
    det = {"id": "host", "type": "deterministic", "knowledge_cutoff": "unknown"}
    asic = {"id": "asic", "type": "asic-sim", "knowledge_cutoff": "unknown", "twin": "gohst"}
    with pytest.raises(ConfigError) as error:
        make_fleet({"backends": [asic, det]})
    assert error.value.key == "backends[0].twin"
    assert "no backend with id 'gohst'" in error.value.reason
    assert "did you mean `host`?" in error.value.reason
    assert error.value.file is not None
    assert error.value.file.endswith("freshet.yaml")


@pytest.mark.asyncio
async def test_a_twin_listed_later_is_built_first(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    det = {"id": "det", "type": "deterministic", "knowledge_cutoff": "unknown"}
    asic = {"id": "asic", "type": "asic-sim", "knowledge_cutoff": "unknown", "twin": "det"}
    fleet = make_fleet({"backends": [asic, det]})
    assert list(fleet.backends) == ["asic", "det"]  # the config's order
    backend = fleet.get("asic")
    assert isinstance(backend, AsicSimBackend)
    assert backend.twin is fleet.get("det")


def test_twins_in_a_cycle_are_a_config_error(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    a = {"id": "a", "type": "asic-sim", "knowledge_cutoff": "unknown", "twin": "b"}
    b = {"id": "b", "type": "asic-sim", "knowledge_cutoff": "unknown", "twin": "a"}
    with pytest.raises(ConfigError, match="cycle: a -> b -> a") as error:
        make_fleet({"backends": [a, b]})
    assert error.value.key == "backends[1].twin"
