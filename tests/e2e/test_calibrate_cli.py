"""`freshet calibrate` as a user runs it: the default fleet measured (SmolLM2 on llama.cpp),
and a config file given the figures with --write, which then still loads and replays with
them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from gateway.settings import load_settings
from tests.support.server import FRESHET

FLEET = """\
# A small fleet: the CPU model and an etched card that tells its text.
backends:
  - id: cpu
    type: llamacpp
    knowledge_cutoff: 2024-06-01
    n_ctx: 2048
    profile:
      watts_active: 7    # measured at the wall
      capex_per_hour: 0.1
  - {id: asic, type: asic-sim, knowledge_cutoff: 2023-12-01, twin: cpu}

groups:
  auto: [cpu, asic]  # cheapest first
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env["FRESHET_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [str(FRESHET), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_default_fleet_measures_the_cpu_model(tmp_path: Path) -> None:
    result = run("calibrate", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    by_id = {r["id"]: r for r in json.loads(result.stdout)}
    cpu = by_id["cpu"]
    assert cpu["type"] == "llamacpp"
    assert cpu["measured"]["prefill_tokens_per_s"] > 0
    assert cpu["measured"]["decode_tokens_per_s"] > 0
    # The card cannot measure itself (its figures are its parameters): listed, not measured.
    assert by_id["asic"]["measured"] is None


def test_write_puts_the_figures_into_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(FLEET)
    result = run("calibrate", "--config", str(config), "--write", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "prefill tok/s" in result.stdout
    assert f"written into {config}" in result.stdout
    written = config.read_text()
    profile = yaml.safe_load(written)["backends"][0]["profile"]
    assert profile["prefill_tokens_per_s"] > 0
    assert profile["decode_tokens_per_s"] > 0
    # The rest of the file as it was: comments, other keys, the card's line, the groups.
    assert profile["watts_active"] == 7
    assert "watts_active: 7    # measured at the wall" in written
    assert "# A small fleet" in written
    assert "  - {id: asic, type: asic-sim, knowledge_cutoff: 2023-12-01, twin: cpu}" in written
    assert "  auto: [cpu, asic]  # cheapest first" in written
    assert (tmp_path / "fleet.yaml.bak").read_text() == FLEET
    # It still loads, with the figures in the backend's profile (which replay models).
    check = run("check", "--config", str(config), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    settings = load_settings(str(config), env={"FRESHET_DATA_DIR": str(tmp_path / "data")})
    assert settings.backends[0].profile["decode_tokens_per_s"] == profile["decode_tokens_per_s"]


def test_write_needs_a_config_file(tmp_path: Path) -> None:
    result = run("calibrate", "--write", cwd=tmp_path)
    assert result.returncode == 2
    assert "--write needs a config file" in result.stderr
