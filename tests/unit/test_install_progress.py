"""scripts/install.sh talks (issue #18.8): a line as each step begins, one with its time
when it ends, and during a long command a heartbeat with the time so far and the log's
last line; a failing command shows its log's tail and its exit status."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "scripts" / "install-progress.sh"


def _bash(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    prelude = f'set -euo pipefail\nSTEPS=2\nHEARTBEAT_S=1\nstep_no=0\nstep_name=""\n. {LIB}\n'
    return subprocess.run(
        ["bash", "-c", prelude + script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )


def test_each_step_says_when_it_begins_and_how_long_it_took(tmp_path: Path) -> None:
    out = _bash('step "first"\nsleep 1\nstep "second"\nend_step\n', tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == "install: [1/2] first ..."
    assert re.fullmatch(r"install: \[1/2\] first: [12] s", lines[1]), lines
    assert lines[2] == "install: [2/2] second ..."
    assert re.fullmatch(r"install: \[2/2\] second: 0 s", lines[3]), lines


def test_a_long_command_has_a_heartbeat_with_its_last_line(tmp_path: Path) -> None:
    command = 'with_heartbeat build build.log bash -c "echo compiling ggml; sleep 3"\n'
    out = _bash(command, tmp_path)
    assert out.returncode == 0, out.stderr
    beats = [line for line in out.stderr.splitlines() if "so far" in line]
    assert beats, out.stderr
    assert re.search(r"build: \d+ s so far \(compiling ggml\)", beats[0]), beats


def test_a_failing_command_shows_its_tail_and_status(tmp_path: Path) -> None:
    command = 'with_heartbeat build build.log bash -c "echo error: no compiler; exit 3"\n'
    out = _bash(command, tmp_path)
    assert out.returncode == 3
    assert "build failed (exit 3)" in out.stderr
    assert "error: no compiler" in out.stderr
