"""The walls of the house (DESIGN §3), one test per rule: ``scripts/walls.py`` run as a test.

Run ``python scripts/walls.py`` for the whole report (the import graph by layer, every violation,
the cycles with each import that makes them).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("walls_checker", ROOT / "scripts" / "walls.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


walls = _load_checker()


@pytest.fixture(scope="module")
def tree() -> Any:
    return walls.scan(ROOT)


def _holds(tree: Any, rule: str) -> None:
    found = walls.CHECKS[rule](tree)
    if found:
        pytest.fail("\n".join(walls.section(tree, rule, found)), pytrace=False)


def test_the_checker_sees_the_tree(tree: Any) -> None:
    """Guard against a vacuous pass: the scan found the core, its packages and the plugins."""
    layers = {walls.layer_of(tree, m) for m in tree.modules if tree.is_core(m)}
    assert {"contracts", "flow", "api", "cli"} <= layers
    assert any(m.startswith("freshet_") for m in tree.modules)
    assert len(tree.core_imports) > 50


def test_r1_no_import_cycle(tree: Any) -> None:
    """No cycle among gateway modules, counting in-function, TYPE_CHECKING and importlib ones."""
    _holds(tree, "R1")


def test_r2_layers(tree: Any) -> None:
    """cli -> api -> flow -> contracts; ledger, state, telemetry beside; builtins as plugins."""
    _holds(tree, "R2")


def test_r3_no_http_framework_below_the_edge(tree: Any) -> None:
    _holds(tree, "R3")


def test_r4_the_core_imports_no_plugin(tree: Any) -> None:
    _holds(tree, "R4")


def test_r5_plugins_import_only_the_plugin_api(tree: Any) -> None:
    _holds(tree, "R5")


# --- the checker itself, on a small tree that crosses every wall -----------------------------

FILES = {
    "gateway/__init__.py": "from gateway.hookspecs import hookimpl\n",
    "gateway/hookspecs.py": "hookimpl = object()\n",
    "gateway/errors.py": "",
    "gateway/backend.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from gateway.settings import Settings\n"
    ),
    "gateway/settings.py": "def load():\n    from . import backend\n",
    "gateway/plugins.py": (
        "import importlib\n"
        "def load():\n"
        "    importlib.import_module('gateway.builtins.echo')\n"
        "    importlib.import_module('freshet_echo')\n"
    ),
    "gateway/flow/__init__.py": "",
    "gateway/flow/service.py": "from ..telemetry import spans\nfrom .. import errors\n",
    "gateway/telemetry/__init__.py": "",
    "gateway/telemetry/spans.py": "",
    "gateway/state/__init__.py": "",
    "gateway/state/limits.py": "from litestar import Request\nimport httpx\n",
    "gateway/builtins/__init__.py": "",
    "gateway/builtins/echo.py": "from gateway import hookimpl\nfrom gateway.backend import X\n",
    "gateway/extra/__init__.py": "",
    "plugins/freshet-echo/freshet_echo/__init__.py": (
        "from gateway import hookimpl\n"
        "from gateway.plugin_api import Backend\n"
        "from gateway.backend import Fleet\n"
    ),
    "plugins/freshet-echo/tests/test_echo.py": "from gateway.flow import service\n",
}


@pytest.fixture(scope="module")
def crossed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("walls")
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return walls.scan(root)


def test_the_checker_collects_every_kind_of_import(crossed: Any) -> None:
    found = {(i.importer, i.target, i.kind) for i in crossed.imports}
    assert ("gateway.backend", "gateway.settings", "TYPE_CHECKING") in found
    assert ("gateway.settings", "gateway.backend", "in-function") in found  # relative
    assert ("gateway.plugins", "gateway.builtins.echo", "importlib") in found
    assert ("gateway.flow.service", "gateway.telemetry.spans", "module") in found  # a module
    assert ("gateway.flow.service", "gateway.errors", "module") in found  # relative
    assert ("gateway.builtins.echo", "gateway", "module") in found  # a name, not a module
    assert not any(i.path.endswith("test_echo.py") for i in crossed.imports)  # plugin tests


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("R1", ["cycle gateway.backend -> gateway.settings -> gateway.backend"]),
        (
            "R2",
            [
                "gateway.extra is in no layer (add its package to PACKAGES)",
                "builtins -> contracts: gateway.builtins.echo -> gateway.backend (X) [module]",
                "flow -> telemetry: gateway.flow.service -> gateway.telemetry.spans [module]",
            ],
        ),
        (
            "R3",
            [
                "HTTP client in state: gateway.state.limits -> httpx [module]",
                "HTTP framework in state: gateway.state.limits -> litestar (Request) [module]",
            ],
        ),
        ("R4", ["gateway.plugins -> freshet_echo [importlib]"]),
        ("R5", ["freshet_echo -> gateway.backend (Fleet) [module]"]),
    ],
)
def test_the_checker_catches_each_crossing(crossed: Any, rule: str, expected: list[str]) -> None:
    assert sorted(v.text for v in walls.CHECKS[rule](crossed)) == sorted(expected)
