"""Energy counters against fakes of what no machine here has: RAPL sysfs and NVML."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from freshet_energy.counters import ModelledCounter, NvmlCounter, RaplCounter
from freshet_energy.power import PowerCurve

from gateway.plugin_api import ConfigError, HardwareProfile


def _rapl_tree(root: Path, domains: dict[str, tuple[int, int]]) -> None:
    for name, (energy, max_range) in domains.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")


def test_rapl_sums_packages_ignores_subdomains_and_handles_wraparound(tmp_path: Path) -> None:
    _rapl_tree(
        tmp_path,
        {
            "intel-rapl:0": (1_000_000, 10_000_000),
            "intel-rapl:1": (9_500_000, 10_000_000),
            "intel-rapl:0:0": (500_000, 10_000_000),  # core sub-domain, inside package 0
        },
    )
    counter = RaplCounter(str(tmp_path))
    assert counter.read() == 0.0
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # +2 J
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("9000000\n")  # not counted
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("500000\n")  # wrapped: +1.000001 J
    assert counter.read() == pytest.approx(2.0 + 1.000001)


def test_rapl_absent_is_reported_not_fatal(tmp_path: Path) -> None:
    assert RaplCounter.available(str(tmp_path)) is False
    with pytest.raises(ConfigError, match="no RAPL domains"):
        RaplCounter(str(tmp_path))


class FakeNvml:
    """The slice of the NVML API (pynvml) the meter uses, with settable readings."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_mj: list[int | None], power_mw: list[int]) -> None:
        self.energy_mj = energy_mj
        self.power_mw = power_mw
        self.initialised = False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        value = self.energy_mj[handle]
        if value is None:
            raise self.NVMLError("Not Supported")
        return value

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self.power_mw[handle]


def test_nvml_total_energy_counter_in_millijoules() -> None:
    fake = FakeNvml(energy_mj=[5_000_000, 7_000_000], power_mw=[0, 0])
    counter = NvmlCounter([0, 1], nvml=fake)
    assert counter.read() == pytest.approx(12_000.0)
    fake.energy_mj[0] += 1500  # 1.5 J on GPU 0
    assert counter.read() == pytest.approx(12_001.5)
    counter.close()
    assert fake.initialised is False


def test_nvml_without_energy_counter_integrates_power_samples() -> None:
    fake = FakeNvml(energy_mj=[None], power_mw=[300_000])  # 300 W, older GPU
    counter = NvmlCounter([0], nvml=fake, sample_s=0.01)
    started = time.monotonic()
    time.sleep(0.3)
    joules = counter.read()
    elapsed = time.monotonic() - started
    counter.close()
    assert joules == pytest.approx(300 * elapsed, rel=0.2)


def test_nvml_without_a_driver_is_a_config_error() -> None:
    class NoDriver(FakeNvml):
        def nvmlInit(self) -> None:
            raise self.NVMLError("Driver Not Loaded")

    with pytest.raises(ConfigError, match="NVML is not usable"):
        NvmlCounter([0], nvml=NoDriver([0], [0]))


def test_power_curve_is_piecewise_linear() -> None:
    gpu = PowerCurve(
        HardwareProfile(kind="gpu", watts_idle=100, power_curve=((1, 300), (128, 600)))
    )
    assert gpu.watts(0) == 100
    assert gpu.watts(1) == 300
    assert gpu.watts(64.5) == pytest.approx(450)
    assert gpu.watts(500) == 600
    cpu = PowerCurve(HardwareProfile(watts_idle=1, watts_active=6, max_concurrency=1))
    assert (cpu.watts(0), cpu.watts(1), cpu.watts(3)) == (1, 6, 6)


def test_modelled_counter_integrates_power_over_time() -> None:
    now = [0.0]
    counter = ModelledCounter(lambda b: 10.0 * b + 1.0, lambda: now[0])
    now[0] = 2.0
    assert counter.read() == pytest.approx(2.0)  # idle, 1 W
    counter.concurrent = 2
    now[0] = 3.0
    assert counter.read() == pytest.approx(2.0 + 21.0)
