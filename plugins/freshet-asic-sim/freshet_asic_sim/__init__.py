"""Freshet backend plugin ``asic-sim``: a simulated etched-ASIC card (Taalas HC1-like).

Registered through the ``freshet`` entry point as backend type ``asic-sim``; see
:class:`~freshet_asic_sim.backend.AsicSimBackend` and the plugin's README.
"""

from __future__ import annotations

from freshet_asic_sim.admission import default_profile
from freshet_asic_sim.backend import AsicSimBackend
from freshet_asic_sim.params import AdapterSpec, AsicParams
from freshet_asic_sim.replay import TraceEntry, replay
from freshet_asic_sim.replay import register_simulators as register_simulators
from freshet_asic_sim.schedule import CardModel, QueueFull
from freshet_asic_sim.simulation import Simulation
from gateway.plugin_api import RegisterBackendType, hookimpl

__all__ = [
    "AdapterSpec",
    "AsicParams",
    "AsicSimBackend",
    "CardModel",
    "QueueFull",
    "Simulation",
    "TraceEntry",
    "default_profile",
    "register_backend_types",
    "replay",
]


@hookimpl
def register_backend_types(register: RegisterBackendType) -> None:
    register("asic-sim", AsicSimBackend)
