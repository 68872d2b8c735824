"""Fixtures for the asic-sim tests: backends built directly, and real fleets from YAML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from asic_sim_helpers import NoFleet
from freshet_asic_sim import AsicSimBackend

from gateway.flow.fleet import Fleet
from gateway.plugin_api import BackendConfig
from gateway.plugins import Plugins
from gateway.settings import load_settings


@pytest.fixture
def make_backend() -> Callable[..., AsicSimBackend]:
    def make(adapters: list[dict[str, Any]] | None = None, **params: Any) -> AsicSimBackend:
        config = BackendConfig(
            id="asic", type="asic-sim", params=params, adapters=adapters or [], source="test"
        )
        return AsicSimBackend(config, NoFleet())

    return make


@pytest.fixture
def make_fleet(tmp_path: Path) -> Callable[[dict[str, Any]], Fleet]:
    """A real fleet from a YAML config file, built through the installed plugins."""

    def make(config: dict[str, Any]) -> Fleet:
        path = tmp_path / "freshet.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return Fleet(load_settings(str(path), env={}), Plugins())

    return make
