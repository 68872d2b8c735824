"""A meter that cannot work here: modelled with a warning, unless the config says required.

And the ``prices:`` and ``energy:`` sections validated when the cost model is built, so a
bad time zone or price is a config error at load, not a failure of every request.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from freshet_energy import EnergyCostModel, nvml_meter
from freshet_energy.prices import Prices

from gateway.builtins.deterministic import DeterministicBackend
from gateway.plugin_api import Backend, BackendConfig, ConfigError, EnergySettings, WattsAt


class _NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


def _config(energy: dict[str, Any]) -> BackendConfig:
    return BackendConfig(id="gpu", type="deterministic", energy=energy, source="f.yaml", index=2)


def _no_driver(settings: EnergySettings, backend: Backend, watts: WattsAt) -> Any:
    raise ConfigError("NVML is not usable here: driver not loaded")


def _cost(energy: dict[str, Any], meters: dict[str, Any] | None = None) -> Any:
    config = _config(energy)
    backend = DeterministicBackend(config, _NoFleet())
    model = EnergyCostModel({}, meters if meters is not None else {"nvml": _no_driver})
    return model.for_backend(backend, config)


def test_an_unavailable_meter_is_modelled_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="freshet_energy.model"):
        cost = _cost({"meter": "nvml", "gpu_indices": [0]})
    assert cost.source == "model"
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = record.getMessage()
    assert "backend gpu: energy meter nvml unavailable here" in text
    assert "driver not loaded" in text
    assert "required: true" in text


def test_a_required_meter_that_is_unavailable_stops_the_start() -> None:
    with pytest.raises(ConfigError) as info:
        _cost({"meter": "nvml", "gpu_indices": [0], "required": True})
    assert info.value.key == "backends[2].energy.meter"
    assert info.value.file == "f.yaml"
    assert "required: true" in info.value.reason
    assert "driver not loaded" in info.value.reason


def test_the_real_nvml_meter_falls_back_where_there_is_no_nvml(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        import pynvml  # type: ignore[import-untyped]

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no module, no driver, no GPU: all mean "absent"
        pass
    else:
        pytest.skip("NVML works on this host")
    with caplog.at_level(logging.WARNING, logger="freshet_energy.model"):
        cost = _cost({"meter": "nvml", "gpu_indices": [0]}, {"nvml": nvml_meter})
    assert cost.source == "model"
    assert any("energy meter nvml unavailable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("energy", "key", "words"),
    [
        ({"meter": "nvlm"}, "backends[2].energy.meter", "did you mean `nvml`?"),
        ({"meter": "nvml", "requird": True}, "backends[2].energy.requird", "`required`"),
        ({"meter": "nvml", "required": "yes"}, "backends[2].energy.required", "true or false"),
    ],
)
def test_energy_section_errors_name_their_key(energy: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _cost(energy)
    assert info.value.key == key
    assert words in info.value.reason


@pytest.mark.parametrize(
    ("prices", "key", "words"),
    [
        ({"timezone": "Mars/Olympus"}, "prices.timezone", "unknown time zone 'Mars/Olympus'"),
        ({"kwh_usd": "cheap"}, "prices.kwh_usd", "Expected `float`"),
        ({"tarifs": []}, "prices.tarifs", "did you mean `tariffs`?"),
        (
            {"tariffs": [{"start": "17:00", "end": "21:00", "kwh": 0.3}]},
            "prices.tariffs[0].kwh",
            "did you mean `kwh_usd`?",
        ),
    ],
)
def test_prices_errors_name_their_key(prices: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        EnergyCostModel(prices, {})
    assert info.value.key == key
    assert words in info.value.reason


def test_a_time_zone_is_checked_when_prices_are_made() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        Prices(timezone="Mars/Olympus")
    assert Prices(timezone="Europe/Paris").kwh_at(0.0) == 0.12
