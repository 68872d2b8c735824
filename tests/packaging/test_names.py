"""Distribution names: the core is ``freshet-gateway`` (``freshet`` on the package index is
another project), every plugin depends on it, and the unknown-type hint names real plugins."""

from __future__ import annotations

import importlib
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.errors import ConfigError
from gateway.flow.fleet import REPO_PLUGIN_TYPES, Fleet
from gateway.plugins import DISTRIBUTION, Plugins, core_version
from gateway.settings import load_settings

ROOT = Path(__file__).parents[2]
PLUGIN_DIRS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))


def _project(directory: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
    return project


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def test_the_core_distribution_is_freshet_gateway_and_installed_so() -> None:
    assert _project(ROOT)["name"] == DISTRIBUTION == "freshet-gateway"
    assert metadata.version(DISTRIBUTION) == core_version() == _project(ROOT)["version"]
    assert DISTRIBUTION in metadata.packages_distributions()["gateway"]
    assert "freshet" not in metadata.packages_distributions()["gateway"]


@pytest.mark.parametrize("plugin", PLUGIN_DIRS, ids=lambda p: p.name)
def test_every_plugin_depends_on_the_core_distribution(plugin: Path) -> None:
    names = [_requirement_name(r) for r in _project(plugin)["dependencies"]]
    assert DISTRIBUTION in names
    assert "freshet" not in names


def test_the_hint_maps_each_repository_backend_type_to_the_plugin_that_registers_it() -> None:
    builtin = set(Plugins(entry_points=False).backend_types())
    found: dict[str, str] = {}
    for plugin in PLUGIN_DIRS:
        project = _project(plugin)
        for name, module in project.get("entry-points", {}).get("freshet", {}).items():
            plugins = Plugins(entry_points=False)
            plugins.register(importlib.import_module(module), name)
            for backend_type in set(plugins.backend_types()) - builtin:
                found[backend_type] = project["name"]
    assert found == dict(REPO_PLUGIN_TYPES)
    for dist in set(found.values()):
        assert (ROOT / "plugins" / dist / "pyproject.toml").is_file()


def _fleet_error(tmp_path: Path, backend_type: str) -> str:
    path = tmp_path / "c.yaml"
    config = {"backends": [{"id": "x", "type": backend_type, "knowledge_cutoff": "2025-01-01"}]}
    path.write_bytes(msgspec.yaml.encode(config))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as err:
        Fleet(settings, Plugins(entry_points=False))
    assert err.value.key == "backends[0].type"
    return str(err.value)


@pytest.mark.parametrize(("backend_type", "dist"), sorted(REPO_PLUGIN_TYPES.items()))
def test_a_missing_repository_type_says_which_plugin_and_where_it_installs_from(
    tmp_path: Path, backend_type: str, dist: str
) -> None:
    message = _fleet_error(tmp_path, backend_type)
    assert f"unknown backend type {backend_type!r}" in message
    assert f"pip install ./plugins/{dist}" in message
    assert "Freshet repository" in message


def test_a_missing_other_type_names_the_entry_point_group_and_no_made_up_distribution(
    tmp_path: Path,
) -> None:
    message = _fleet_error(tmp_path, "tpu")
    assert "unknown backend type 'tpu'" in message
    assert "entry-point group 'freshet'" in message
    assert "freshet-tpu" not in message
    for dist in REPO_PLUGIN_TYPES.values():
        assert dist in message
