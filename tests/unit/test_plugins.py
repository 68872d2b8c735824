"""Hooks are documented, the documented example works, and the facade guards the host."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from litestar.testing import AsyncTestClient

from gateway import hookimpl, hookspecs
from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.errors import ConfigError
from gateway.plugins import Plugins
from gateway.settings import load_settings
from gateway.testing import BackendContract
from tests.support.inprocess import wait_ready

DOCS = Path(__file__).parents[2] / "docs" / "plugins.md"


def _hook_names() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "freshet_spec")
    ]


def test_every_hook_is_typed_and_documented() -> None:
    text = DOCS.read_text()
    names = _hook_names()
    assert len(names) >= 5
    for name in names:
        fn = getattr(hookspecs, name)
        assert fn.__doc__, f"hook {name} has no docstring"
        assert all(
            p.annotation is not inspect.Parameter.empty
            for p in inspect.signature(fn).parameters.values()
        ), name
        assert re.search(rf"^### `{name}\(", text, re.M), (
            f"hook {name} missing from docs/plugins.md"
        )


def _docs_example_module() -> types.ModuleType:
    blocks = re.findall(r"```python\n(# freshet_shout/__init__.py\n.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 1
    module = types.ModuleType("freshet_shout")
    exec(compile(blocks[0], str(DOCS), "exec"), module.__dict__)
    return module


@pytest.mark.asyncio
async def test_documented_example_plugin_serves_requests(tmp_path: Path) -> None:
    config = re.search(r"```yaml\n# freshet.yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert config
    path = tmp_path / "freshet.yaml"
    path.write_text(config.group(1))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    plugins = Plugins(entry_points=False)
    plugins.register(_docs_example_module(), "shout")
    runtime = Runtime(settings, plugins)
    async with AsyncTestClient(app=create_app(settings, runtime)) as client:
        await wait_ready(client)
        resp = await client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "hello river"}]},
        )
        legacy = await client.post(
            "/v1/completions", json={"model": "auto", "prompt": "hello delta", "max_tokens": 8}
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "HELLO RIVER!!!"
    assert resp.headers["x-freshet-knowledge-cutoff"] == "2025-01-01"
    assert legacy.status_code == 200, legacy.text
    assert legacy.json()["choices"][0]["text"] == "HELLO DELTA!!!"


def _docs_example_entry() -> dict[str, Any]:
    """The example's backend entry, from the documented freshet.yaml."""
    config = re.search(r"```yaml\n# freshet.yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert config
    entry: dict[str, Any] = yaml.safe_load(config.group(1))["backends"][0]
    return entry


class TestDocumentedExamplePassesTheBackendContract(BackendContract):
    """What docs/plugins.md tells a plugin author to run, run on the documented example."""

    factory = _docs_example_module().ShoutBackend
    config = _docs_example_entry()


def test_two_plugins_registering_one_type_name_is_a_config_error() -> None:
    class Other:
        @staticmethod
        @hookimpl
        def register_backend_types(register: Any) -> None:
            register("deterministic", object)

    plugins = Plugins(entry_points=False)
    plugins.register(Other(), "other")
    with pytest.raises(ConfigError, match="registered by both"):
        plugins.backend_types()


@pytest.mark.asyncio
async def test_failing_usage_hook_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[object] = []

    class Broken:
        @staticmethod
        @hookimpl
        def usage_recorded(record: Any) -> None:
            raise RuntimeError("exporter down")

    class Good:
        @staticmethod
        @hookimpl
        async def usage_recorded(record: Any) -> None:
            seen.append(record)

    plugins = Plugins(entry_points=False)
    plugins.register(Broken(), "broken")
    plugins.register(Good(), "good")
    await plugins.usage_recorded({"request_id": "r1"})
    assert seen == [{"request_id": "r1"}]
    assert "plugin broken failed in usage_recorded" in caplog.text


def test_blocked_builtin_is_not_registered() -> None:
    assert "deterministic" in Plugins(entry_points=False).backend_types()
    assert (
        "deterministic"
        not in Plugins(blocked=["deterministic"], entry_points=False).backend_types()
    )


def test_plugin_info_is_serialisable() -> None:
    infos = Plugins(entry_points=False).info()
    data = msgspec.json.decode(msgspec.json.encode(infos))
    assert data[0]["name"] == "deterministic"
    assert data[0]["builtin"] is True
    assert data[0]["hooks"] == ["register_backend_types"]
