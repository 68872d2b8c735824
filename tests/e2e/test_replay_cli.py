"""`freshet replay` as a user runs it: the Azure slice through two fleets, --json, --html,
a horizon, the ledger as a trace, and errors that say where."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.server import FRESHET

ROOT = Path(__file__).parents[2]
AZURE = ROOT / "tests" / "fixtures" / "traces" / "azure"
GPU = """
backends:
  - id: gpu
    type: vllm
    urls: [http://gpu.invalid:8000]
    model: llama-3.1-8b
    knowledge_cutoff: 2025-06-01
groups:
  auto: [gpu]
"""
CARD = GPU.replace(
    "groups:\n  auto: [gpu]",
    "  - {id: asic, type: asic-sim, model: llama-3.1-8b, knowledge_cutoff: 2023-12-01}\n"
    "groups:\n  auto: [gpu, asic]",
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env["FRESHET_TRACE_DIR"] = str(AZURE)
    env["FRESHET_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [str(FRESHET), "replay", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.fixture
def fleets(tmp_path: Path) -> Path:
    (tmp_path / "gpu.yaml").write_text(GPU)
    (tmp_path / "card.yaml").write_text(CARD)
    return tmp_path


def test_json_compares_two_fleets(fleets: Path) -> None:
    result = run(
        "--trace", "azure-code", "--trace", "azure-conv", "--config", "gpu.yaml",
        "--config", "card.yaml", "--freshness", "70%:none,20%:365d,10%:90d",
        "--start", "2026-01-01", "--json", cwd=fleets,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    gpu, card = report["fleets"]
    assert (gpu["fleet"], card["fleet"]) == ("gpu", "card")
    assert gpu["requests"] == card["requests"] == 600
    assert gpu["etched_share"] is None
    assert 0 < card["etched_share"] < 1
    assert card["refused"]["freshness"] == gpu["refused"]["freshness"] > 0  # the 90d share
    assert {b["id"] for b in card["backends"]} == {"gpu", "asic"}
    assert report["trace"]["citation"].startswith("Azure LLM inference traces 2023")


def test_text_and_html_over_a_horizon(fleets: Path) -> None:
    result = run(
        "--trace", "azure-conv", "--config", "gpu.yaml", "--config", "card.yaml",
        "--freshness", "100%:365d..1095d", "--start", "2026-01-01", "--horizon", "3m",
        "--adapter", "asic:news:3m:21d", "--html", "report.html", "--by", "hour",
        cwd=fleets,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Horizon: 3 months from 2026-01-01" in out
    assert "gpu $/month" in out
    assert "card $/month" in out
    assert "usage records by hour" in out
    page = (fleets / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert "<svg" in page


def test_a_malformed_row_names_file_and_line(fleets: Path) -> None:
    (fleets / "bad.csv").write_text("timestamp,prompt_tokens,output_tokens\n1,10,5\n2,ten,5\n")
    result = run("--trace", "bad.csv", "--config", "gpu.yaml", cwd=fleets)
    assert result.returncode == 2
    assert "bad.csv:3: prompt tokens must be a whole number" in result.stderr


def test_the_ledger_is_a_trace(fleets: Path) -> None:
    result = run(
        "--trace", "azure-code", "--config", "gpu.yaml", "--ledger", "kept", "--limit", "50",
        "--json", cwd=fleets,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    again = run(
        "--trace", "ledger", "--ledger-file", "kept/gpu.sqlite3", "--since", "2020-01-01",
        "--config", "card.yaml", "--json", cwd=fleets,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["fleets"][0]["requests"] == 50


def test_a_simulator_option_that_does_not_exist_is_refused(fleets: Path) -> None:
    result = run(
        "--trace", "azure-code", "--config", "gpu.yaml", "--sim", "gpu.kv_cache=1", cwd=fleets
    )
    assert result.returncode == 2
    assert "--sim gpu" in result.stderr
    assert "kv_cache" in result.stderr
