"""The `freshet` command: plugin discovery through entry points, config errors, backends."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import openai
import pytest

from tests.support.server import FRESHET, running_server, write_config

THIRD_PARTY = Path(__file__).parent.parent / "fixtures" / "thirdparty"
ECHO_CONFIG = {
    "backends": [
        {"id": "echo", "type": "echo-test", "model": "echo-1", "knowledge_cutoff": "2025-01-01"}
    ],
    "groups": {"auto": ["echo"]},
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(THIRD_PARTY), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _freshet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FRESHET, *args], capture_output=True, text=True, env=env or _env(), timeout=60
    )


def test_installed_plugin_is_listed_with_its_distribution_and_hooks() -> None:
    out = _freshet("plugins", "--json")
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["echo-test"]["distribution"] == "freshet-echo-test"
    assert plugins["echo-test"]["version"] == "0.2.0"
    assert plugins["echo-test"]["hooks"] == ["register_backend_types"]
    assert plugins["echo-test"]["builtin"] is False
    assert plugins["llamacpp"]["distribution"] == "freshet-llamacpp"
    assert plugins["deterministic"]["builtin"] is True
    table = _freshet("plugins")
    assert "freshet-echo-test" in table.stdout
    assert "register_backend_types" in table.stdout


def test_installed_plugin_serves_requests(tmp_path: Path) -> None:
    with running_server(tmp_path, ECHO_CONFIG, env=_env()) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        out = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "one two three"}]
        )
    assert out.choices[0].message.content == "three two one"


def test_blocked_plugin_is_not_loaded(tmp_path: Path) -> None:
    env = _env(FRESHET_BLOCK_PLUGINS="echo-test")
    names = {p["name"] for p in json.loads(_freshet("plugins", "--json", env=env).stdout)}
    assert "echo-test" not in names
    assert "llamacpp" in names
    config = write_config(tmp_path, ECHO_CONFIG)
    out = _freshet("serve", "--config", str(config), "--port", "1", env=env)
    assert out.returncode == 2
    assert "unknown backend type 'echo-test'" in out.stderr
    assert "backends[0].type" in out.stderr


@pytest.mark.parametrize(
    ("config", "key", "reason"),
    [
        (
            {
                "backends": [
                    {
                        "id": "a",
                        "type": "deterministic",
                        "knowledge_cutoff": "unknown",
                        "tokens_per_s": "fast",
                    }
                ]
            },
            "backends[0].tokens_per_s",
            "Expected `float`",
        ),
        (
            {"backends": [{"id": "a", "type": "deterministic", "knowledge_cutoff": "last year"}]},
            "backends[0].knowledge_cutoff",
            "not an ISO date",
        ),
        (
            {
                "backends": [{"id": "a", "type": "deterministic", "knowledge_cutoff": "unknown"}],
                "groups": {"g": ["b"]},
            },
            "groups.g",
            "unknown backend id 'b'",
        ),
        (
            {
                "backends": [
                    {"id": "a", "type": "deterministic", "knowledge_cutoff": "unknown"},
                    {"id": "a", "type": "deterministic", "knowledge_cutoff": "unknown"},
                ]
            },
            "backends[1].id",
            "duplicate backend id",
        ),
        (
            {
                "backends": [
                    {"id": "a", "type": "deterministic", "knowledge_cutoff": "unknown", "bogus": 1}
                ]
            },
            "backends[0]",
            "unknown field `bogus`",
        ),
        ({"backends": [{"type": "deterministic"}]}, "backends[0]", "missing required key 'id'"),
        ({"backend": []}, "backend", "unknown top-level key"),
    ],
)
def test_config_errors_name_file_key_and_reason(
    tmp_path: Path, config: dict[str, object], key: str, reason: str
) -> None:
    path = write_config(tmp_path, config)
    out = _freshet("serve", "--config", str(path), "--port", "1")
    assert out.returncode == 2, out.stderr
    assert str(path) in out.stderr
    assert key in out.stderr
    assert reason in out.stderr


def test_unreadable_and_invalid_yaml_configs(tmp_path: Path) -> None:
    out = _freshet("serve", "--config", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2
    assert "cannot read config file" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends: [\n")
    out = _freshet("serve", "--config", str(bad))
    assert out.returncode == 2
    assert "invalid YAML" in out.stderr


def test_backends_table_offline_and_live(tmp_path: Path) -> None:
    config = write_config(tmp_path, ECHO_CONFIG)
    offline = _freshet("backends", "--config", str(config), "--url", "http://127.0.0.1:9")
    assert offline.returncode == 0
    assert "echo-1" in offline.stdout
    assert "2025-01-01" in offline.stdout
    assert "gateway not running" in offline.stdout
    with running_server(tmp_path, ECHO_CONFIG, env=_env()) as server:
        live = _freshet("backends", "--config", str(config), "--url", server.url, "--json")
    rows = json.loads(live.stdout)
    circuits = [r.pop("circuit") for r in rows]
    assert rows == [
        {
            "id": "echo",
            "type": "echo-test",
            "models": ["echo-1"],
            "knowledge_cutoff": "2025-01-01",
            "health": "healthy",
            "upstreams": None,
        }
    ]
    assert circuits[0]["state"] == "closed"
    assert circuits[0]["ejections"] == 0


def test_backends_says_when_the_gateway_refuses_it(tmp_path: Path) -> None:
    """With auth on, `freshet backends` used to say "gateway not running" on a 401."""
    config = write_config(tmp_path, ECHO_CONFIG)
    with running_server(
        tmp_path, ECHO_CONFIG, env=_env(FRESHET_AUTH="on", FRESHET_ADMIN_KEY="admin-k")
    ) as server:
        refused = _freshet("backends", "--config", str(config), "--url", server.url, "--json")
        signed = _freshet(
            "backends",
            "--config",
            str(config),
            "--url",
            server.url,
            "--json",
            env=_env(FRESHET_ADMIN_KEY="admin-k"),
        )
    assert refused.returncode == 0, refused.stderr
    (row,) = json.loads(refused.stdout)
    assert row["health"] == "unknown (the gateway answered 401: set FRESHET_ADMIN_KEY)"
    (row,) = json.loads(signed.stdout)
    assert row["health"] == "healthy"
