"""The plugin API's public face is pinned: a change to what plugins may import is deliberate."""

from __future__ import annotations

import importlib
import inspect

import msgspec
import pytest

import gateway.plugin_api as api
from gateway import hookspecs
from gateway.plugins import Plugins

EXPORTED = [
    "Backend",
    "BackendConfig",
    "BackendCost",
    "BackendError",
    "BackendFactory",
    "BackendStatus",
    "BackendUnavailable",
    "BackendUsage",
    "Calibratable",
    "Candidate",
    "Capability",
    "Chunk",
    "ConfigError",
    "ContentPart",
    "ContextLengthExceeded",
    "CostModel",
    "CostModelFactory",
    "Costing",
    "DEFAULT_OPERATIONS",
    "Deployment",
    "Embedder",
    "EmbeddingRequest",
    "EmbeddingResult",
    "EnergyMeter",
    "EnergySettings",
    "EnergySource",
    "FINISH_TOOL_CALLS",
    "Fleet",
    "FreshetError",
    "GenerationRequest",
    "HardwareKind",
    "HardwareProfile",
    "ImagePart",
    "InvalidRequest",
    "KNOWN_CAPABILITIES",
    "KNOWN_ENERGY_SOURCES",
    "KNOWN_HARDWARE_KINDS",
    "ListPrice",
    "Message",
    "MeterFactory",
    "Metering",
    "ModelNotFound",
    "NamedTool",
    "NotFound",
    "Operation",
    "PooledSimulator",
    "Quote",
    "RateLimited",
    "RegisterBackendType",
    "RegisterCostModel",
    "RegisterEnergyMeter",
    "RegisterRoute",
    "RegisterRouter",
    "RegisterSimulator",
    "RequestShape",
    "ResponseFormat",
    "Router",
    "RouterFactory",
    "ServerPool",
    "SimDone",
    "SimRequest",
    "SimTotals",
    "Simulator",
    "SimulatorFactory",
    "TextPart",
    "TokenCounter",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolSpec",
    "UsageRecord",
    "WattsAt",
    "convert_list_price",
    "convert_params",
    "convert_profile",
    "convert_section",
    "hookimpl",
    "is_remote",
    "profile_watts",
    "queue_wait",
    "simulated_usage",
    "swap_wait",
    "with_output",
]


def test_exported_names_are_pinned() -> None:
    assert sorted(api.__all__) == EXPORTED
    assert len(set(api.__all__)) == len(api.__all__)


def test_every_exported_name_is_importable_and_public() -> None:
    module = importlib.import_module("gateway.plugin_api")
    for name in api.__all__:
        assert not name.startswith("_"), name
        assert getattr(module, name) is not None, name


def test_nothing_public_is_left_out_of_all() -> None:
    """Every public name in the module is in ``__all__`` (no accidental extra face)."""
    public = {
        name
        for name, value in vars(api).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(api.__all__)


def test_hookimpl_is_the_one_gateway_exports() -> None:
    import gateway

    assert api.hookimpl is gateway.hookimpl is hookspecs.hookimpl


def test_every_hookspec_is_typed_with_the_plugin_api() -> None:
    """Each hook parameter is annotated with a name the plugin API exports; none is ``Any``."""
    specs = [
        fn
        for _, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "freshet_spec")
    ]
    assert {fn.__name__ for fn in specs} == {
        "register_backend_types",
        "register_energy_meters",
        "register_cost_models",
        "register_routers",
        "register_simulators",
        "usage_recorded",
        "extra_routes",
    }
    for fn in specs:
        for parameter in inspect.signature(fn).parameters.values():
            annotation = str(parameter.annotation)
            assert "Any" not in annotation, (fn.__name__, annotation)
            assert annotation in api.__all__, (fn.__name__, annotation)
        assert "When:" in (fn.__doc__ or ""), f"{fn.__name__}: say when it runs"


@pytest.mark.parametrize("kind", ["gpu", "cpu", "asic", "remote", "tpu", "fpga-v2"])
def test_hardware_kinds_are_open_names(kind: str) -> None:
    profile = api.convert_section({"kind": kind}, api.HardwareProfile, "f.yaml", "profile")
    assert profile.kind == kind


@pytest.mark.parametrize("kind", ["", "GPU", "a b"])
def test_a_hardware_kind_must_be_a_tidy_name(kind: str) -> None:
    with pytest.raises(api.ConfigError) as info:
        api.convert_section({"kind": kind}, api.HardwareProfile, "f.yaml", "profile")
    assert info.value.key == "profile.kind"


def test_known_values_are_documented_and_valid() -> None:
    assert set(api.KNOWN_HARDWARE_KINDS) == {"gpu", "cpu", "asic", "remote"}
    assert set(api.KNOWN_ENERGY_SOURCES) == {"nvml", "rapl", "model", "simulated"}
    for kind in api.KNOWN_HARDWARE_KINDS:
        assert msgspec.convert({"kind": kind}, api.HardwareProfile).kind == kind


def test_a_new_meter_needs_no_core_change() -> None:
    """A third-party meter with its own energy source, registered and built through the API."""

    class PduMeter:
        source: api.EnergySource = "smart-pdu"

        def __init__(self, outlet: int) -> None:
            self.outlet = outlet

        def read(self) -> float:
            return 42.0

        def close(self) -> None:
            return None

    def pdu_meter(
        settings: api.EnergySettings, backend: api.Backend, watts: api.WattsAt
    ) -> api.EnergyMeter:
        return PduMeter(int(settings.options["outlet"]))

    class PduPlugin:
        @staticmethod
        @api.hookimpl
        def register_energy_meters(register: api.RegisterEnergyMeter) -> None:
            register("pdu", pdu_meter)

    plugins = Plugins(entry_points=False)
    plugins.register(PduPlugin(), "pdu")
    factory = plugins.energy_meters()["pdu"]
    settings = msgspec.convert({"meter": "pdu", "options": {"outlet": 3}}, api.EnergySettings)
    meter = factory(settings, _no_backend(), lambda n: 0.0)
    assert (meter.source, meter.read()) == ("smart-pdu", 42.0)
    assert meter.source not in api.KNOWN_ENERGY_SOURCES


def _no_backend() -> api.Backend:
    from gateway.builtins.deterministic import DeterministicBackend

    return DeterministicBackend(api.BackendConfig(id="d", type="deterministic"), _NoFleet())


class _NoFleet:
    def get(self, backend_id: str) -> api.Backend:
        raise KeyError(backend_id)
