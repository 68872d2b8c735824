"""Mode ``engine``: vLLM in-process, run where vLLM is importable (its own virtualenv)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.vllm.vllm_process import not_installed_reason, vllm_env, vllm_model, vllm_venv

ROOT = Path(__file__).resolve().parents[2]


def test_engine_mode_streams_aborts_and_refuses_long_prompts(tmp_path: Path) -> None:
    reason = not_installed_reason()
    if reason is not None:
        pytest.skip(reason)
    # The gateway's core and this plugin from the working tree; vLLM from its venv.
    path = os.pathsep.join([str(ROOT), str(ROOT / "plugins" / "freshet-vllm")])
    log = tmp_path / "engine.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [
                str(vllm_venv() / "bin" / "python"),
                str(Path(__file__).with_name("engine_driver.py")),
                str(vllm_model()),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**vllm_env(), "PYTHONPATH": path},
            timeout=240,
            check=False,
        )
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("FRESHET-RESULT ")]
    assert done.returncode == 0, text[-4000:]
    assert lines, text[-4000:]
    result = json.loads(lines[-1].removeprefix("FRESHET-RESULT "))
    assert result["type"] == "VllmEngineBackend"
    chat = result["chat"]
    assert "Paris" in chat["text"]
    assert chat["pieces"] >= 3  # streamed, not in one piece
    assert chat["finish_reason"] == "stop"
    # Same tokens as vLLM's server for this greedy request (test_gateway_vllm checks 37).
    assert chat["prompt_tokens"] > 20
    assert 0 < chat["completion_tokens"] <= 24
    assert result["after_abort"] == {"running": 0, "healthy": True, "unfinished_in_vllm": 0}
    assert result["too_long"] == {"status": 400, "code": "context_length_exceeded"}
