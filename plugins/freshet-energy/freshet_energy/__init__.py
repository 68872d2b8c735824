"""Freshet's cost plugin: energy meters (NVML, RAPL, modelled, simulated) and prices.

Registers the meters through ``register_energy_meters`` (so a third party can add a
smart PDU or a cloud power API the same way) and the ``energy`` cost model through
``register_cost_models``.
"""

from __future__ import annotations

import time

from freshet_energy.counters import ModelledCounter, NvmlCounter, RaplCounter
from freshet_energy.model import EnergyCostModel
from gateway.plugin_api import (
    Backend,
    EnergyMeter,
    EnergySettings,
    RegisterCostModel,
    RegisterEnergyMeter,
    WattsAt,
    hookimpl,
)

__all__ = ["EnergyCostModel", "EnergySettings", "ModelledCounter", "NvmlCounter", "RaplCounter"]


def rapl_meter(settings: EnergySettings, backend: Backend, watts: WattsAt) -> EnergyMeter:
    return RaplCounter(settings.rapl_root)


def nvml_meter(settings: EnergySettings, backend: Backend, watts: WattsAt) -> EnergyMeter:
    return NvmlCounter(settings.gpu_indices)


def model_meter(settings: EnergySettings, backend: Backend, watts: WattsAt) -> EnergyMeter:
    return ModelledCounter(watts, time.monotonic)


@hookimpl
def register_energy_meters(register: RegisterEnergyMeter) -> None:
    register("rapl", rapl_meter)
    register("nvml", nvml_meter)
    register("model", model_meter)


@hookimpl
def register_cost_models(register: RegisterCostModel) -> None:
    register("energy", EnergyCostModel)
