"""Freshet's cost plugin: energy meters (NVML, RAPL, modelled, simulated) and prices.

Registers the meters through ``register_energy_meters`` (so a third party can add a
smart PDU or a cloud power API the same way) and the ``energy`` cost model through
``register_cost_models``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from freshet_energy.counters import Counter, ModelledCounter, NvmlCounter, RaplCounter
from freshet_energy.model import EnergyCostModel, EnergySettings
from gateway import hookimpl
from gateway.backend import Backend

__all__ = ["EnergyCostModel", "EnergySettings", "ModelledCounter", "NvmlCounter", "RaplCounter"]

Watts = Callable[[float], float]


def rapl_meter(settings: EnergySettings, backend: Backend, watts: Watts) -> Counter:
    return RaplCounter(settings.rapl_root)


def nvml_meter(settings: EnergySettings, backend: Backend, watts: Watts) -> Counter:
    return NvmlCounter(settings.gpu_indices)


def model_meter(settings: EnergySettings, backend: Backend, watts: Watts) -> Counter:
    return ModelledCounter(watts, time.monotonic)


@hookimpl
def register_energy_meters(register: Any) -> None:
    register("rapl", rapl_meter)
    register("nvml", nvml_meter)
    register("model", model_meter)


@hookimpl
def register_cost_models(register: Any) -> None:
    register("energy", EnergyCostModel)
