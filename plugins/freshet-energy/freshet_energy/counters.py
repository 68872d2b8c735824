"""Energy counters: cumulative joules read from hardware (RAPL, NVML), or modelled.

Every counter is a :class:`gateway.plugin_api.EnergyMeter`: it answers ``read() ->
joules`` (monotonic, wrap-around handled) and says its ``source``. The board account
reads it at each request's start and end and splits the difference between the requests
that ran in that interval.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.plugin_api import ConfigError, EnergySource


class RaplCounter:
    """Intel/AMD RAPL package energy from sysfs (``energy_uj``, wraps at
    ``max_energy_range_uj``). Root-only on Linux >= 5.10; absent on many VMs."""

    source: EnergySource = "rapl"

    def __init__(self, root: str = "/sys/class/powercap") -> None:
        # Package domains only (intel-rapl:N), not their sub-domains (intel-rapl:N:M),
        # which are already included in the package figure.
        self._domains = sorted(
            Path(d)
            for d in glob.glob(os.path.join(root, "intel-rapl:*"))
            if d.rsplit(":", 1)[-1].isdigit() and d.count(":") == 1
        )
        if not self._domains:
            raise ConfigError(f"no RAPL domains under {root}")
        self._range = [int((d / "max_energy_range_uj").read_text()) for d in self._domains]
        self._last = [self._raw(d) for d in self._domains]
        self._total_uj = 0
        self._lock = threading.Lock()

    @staticmethod
    def _raw(domain: Path) -> int:
        return int((domain / "energy_uj").read_text())

    @classmethod
    def available(cls, root: str = "/sys/class/powercap") -> bool:
        try:
            cls(root)
        except (ConfigError, OSError, ValueError):
            return False
        return True

    def read(self) -> float:
        with self._lock:
            for i, domain in enumerate(self._domains):
                now = self._raw(domain)
                delta = now - self._last[i]
                if delta < 0:  # the counter wrapped
                    delta += self._range[i] + 1
                self._total_uj += delta
                self._last[i] = now
            return self._total_uj / 1e6

    def close(self) -> None:
        return None


class NvmlCounter:
    """NVIDIA board energy through NVML for the GPUs a backend uses.

    Uses the total-energy counter (millijoules since driver load, Volta and newer) where
    the GPU supports it; otherwise integrates ``nvmlDeviceGetPowerUsage`` (milliwatts) in
    a sampling thread. ``nvml`` is the ``pynvml`` module (nvidia-ml-py) or a fake of it.
    """

    source: EnergySource = "nvml"

    def __init__(self, gpu_indices: Sequence[int], nvml: Any = None, sample_s: float = 0.1) -> None:
        if nvml is None:
            import pynvml  # type: ignore[import-untyped]  # only where NVML is wanted

            nvml = pynvml
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise ConfigError(f"NVML is not usable here: {exc}") from exc
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in gpu_indices]
        if not self._handles:
            raise ConfigError("NVML meter needs at least one GPU index (energy.gpu_indices)")
        self._counter: list[bool] = []
        for handle in self._handles:
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                self._counter.append(True)
            except nvml.NVMLError:
                self._counter.append(False)
        self._sampled_j = [0.0 for _ in self._handles]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if not all(self._counter):
            self._thread = threading.Thread(
                target=self._sample, args=(sample_s,), name="nvml-power", daemon=True
            )
            self._thread.start()

    def _sample(self, period: float) -> None:
        last = time.monotonic()
        while not self._stop.wait(period):
            now = time.monotonic()
            for i, handle in enumerate(self._handles):
                if not self._counter[i]:
                    watts = self._nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
                    with self._lock:
                        self._sampled_j[i] += watts * (now - last)
            last = now

    def read(self) -> float:
        total = 0.0
        for i, handle in enumerate(self._handles):
            if self._counter[i]:
                total += self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
            else:
                with self._lock:
                    total += self._sampled_j[i]
        return total

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        self._nvml.nvmlShutdown()


class ModelledCounter:
    """Joules integrated from a power model, P(concurrent requests), over time."""

    source: EnergySource = "model"

    def __init__(self, watts: Callable[[float], float], clock: Callable[[], float]) -> None:
        self._watts = watts
        self._clock = clock
        self._t = clock()
        self._j = 0.0
        self.concurrent = 0

    def read(self) -> float:
        now = self._clock()
        self._j += self._watts(self.concurrent) * max(0.0, now - self._t)
        self._t = now
        return self._j

    def close(self) -> None:
        return None
