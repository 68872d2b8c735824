from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings


def test_embedded_default_needs_no_file() -> None:
    s = load_settings(env={})
    assert s.config_file is None
    assert (s.host, s.port) == ("127.0.0.1", 8400)
    cpu = s.backends[0]
    assert (cpu.id, cpu.type, cpu.model) == ("cpu", "llamacpp", "smollm2-135m")
    assert cpu.knowledge_cutoff == dt.date(2024, 6, 1)
    assert s.groups["auto"] == ("asic", "cpu")
    assert s.backends[1].type == "asic-sim"


def test_precedence_arguments_env_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "server: {host: 0.0.0.0, port: 9000}\n"
        "backends: [{id: a, type: deterministic, knowledge_cutoff: 2024-02-03}]\n"
    )
    s = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path / "d")})
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert s.data_dir == tmp_path / "d"
    assert s.backends[0].knowledge_cutoff == dt.date(2024, 2, 3)
    s = load_settings(env={"FRESHET_CONFIG": str(path), "FRESHET_PORT": "9100"})
    assert s.port == 9100
    assert load_settings(str(path), env={"FRESHET_PORT": "9100"}, port=9200).port == 9200


def test_bad_port_in_env_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="FRESHET_PORT must be an integer"):
        load_settings(env={"FRESHET_PORT": "http"})


def test_type_specific_keys_go_to_params(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "backends: [{id: a, type: x, model: m, knowledge_cutoff: unknown, n_ctx: 512,"
        " profile: {watts_idle: 2}}]"
    )
    b = load_settings(str(path), env={}).backends[0]
    assert dict(b.params) == {"n_ctx": 512}
    assert dict(b.profile) == {"watts_idle": 2}
    assert b.source == str(path)
