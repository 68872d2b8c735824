"""``freshet serve``'s logs, from the real command: one format (text or JSON lines) for
uvicorn's, the gateway's and the CLI's lines, the access log, worker ids, readiness per
backend with its real state, and the start-up errors that must come before any model loads
(an unknown log level, a port in use)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import FRESHET, Server, free_port, write_config

pytestmark = pytest.mark.slow

DET = {"id": "det", "type": "deterministic", "model": "m-det", "knowledge_cutoff": "2024-01-01"}
CONFIG = {"backends": [DET], "groups": {"auto": ["det"]}}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env["FRESHET_DATA_DIR"] = str(tmp / "data")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def _serve(tmp: Path, config: dict[str, Any], *flags: str) -> Iterator[Server]:
    """``freshet serve`` with these flags until /ready, then SIGTERM (the log is complete
    once this exits)."""
    port = free_port()
    args = [FRESHET, "serve", "--port", str(port), "--config", str(write_config(tmp, config))]
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*args, *flags], stdout=out, stderr=subprocess.STDOUT, env=_env(tmp)
        )
    server = Server(proc, port, log, tmp / "data")
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, server.log_text()
            with contextlib.suppress(OSError):
                if server.get("/ready")[0] == 200:
                    break
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _post(server: Server, body: dict[str, Any]) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        server.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.status, resp.headers["x-request-id"], resp.read()


def _get(server: Server, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=10) as resp:
            return resp.status, resp.headers["x-request-id"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["x-request-id"]


def test_json_lines_access_log_and_readiness_per_backend(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there: a vLLM server that is down
    gpu = {
        "id": "gpu",
        "type": "vllm",
        "model": "m-gpu",
        "knowledge_cutoff": "2024-06-01",
        "urls": [f"http://127.0.0.1:{dead}"],
        "connect_timeout_s": 1.0,
        "poll_interval_s": 1.0,
    }
    config = {"backends": [DET, gpu], "groups": {"auto": ["det"]}}
    flags = ("--log-format", "json", "--access-log", "--log-level", "info")
    with _serve(tmp_path, config, *flags) as server:
        plain = _post(server, CHAT)
        streamed = _post(server, {**CHAT, "stream": True})
        health = _get(server, "/health")
        missing = _get(server, "/no/such/path")
    text = server.log_text()
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "logger", "message", "worker"} <= entry.keys(), line
        assert entry["worker"] == 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
        entries.append(entry)
    loggers = {e["logger"] for e in entries}
    assert {"freshet.serve", "freshet.access", "uvicorn.error"} <= loggers, loggers
    assert "uvicorn.access" not in loggers  # one access log: ours
    messages = [e["message"] for e in entries]

    # Readiness: each backend with the state it reports, not a blanket "ready".
    assert "backend det ready" in messages, messages
    down = [m for m in messages if m.startswith("backend gpu not ready (")]
    assert len(down) == 1, messages
    assert "0/1 vLLM servers up" in down[0], down
    assert "1 of 2 backends ready: det" in messages, messages
    assert not any(m.startswith("backends ready") for m in messages)

    # The access log: one line per request, with its fields.
    access = {
        e["request_id"]: e
        for e in entries
        if e["logger"] == "freshet.access" and e["path"] != "/ready"  # the start's polls
    }
    assert len(access) == 4, access
    for (status, request_id, _), stream in ((plain, False), (streamed, True)):
        line = access[request_id]
        assert (line["method"], line["path"], line["status"]) == (
            "POST",
            "/v1/chat/completions",
            status,
        )
        assert line["backend"] == "det", (line, stream)
        assert isinstance(line["duration_ms"], float)
        assert line["duration_ms"] >= 0
        assert line["level"] == "INFO"
    assert access[health[1]]["path"] == "/health"
    assert access[health[1]]["status"] == 200
    assert access[missing[1]]["status"] == missing[0] == 404
    assert "backend" not in access[health[1]]  # no backend served it: no field
    assert "Traceback" not in text


def test_text_lines_carry_worker_ids_with_two_workers(tmp_path: Path) -> None:
    with _serve(tmp_path, CONFIG, "--workers", "2", "--log-level", "info") as server:
        deadline = time.monotonic() + 30
        while server.log_text().count("backend det ready") < 2:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z (DEBUG|INFO|WARNING|ERROR) w(\d+) (\S+): ")
    workers = {}
    for line in lines:
        match = pattern.match(line)
        assert match, line  # one format: uvicorn's lines too
        if "backend det ready" in line:
            workers[match.group(2)] = line
    assert set(workers) == {"1", "2"}, lines
    assert not any(" uvicorn.access: " in line for line in lines)  # ours only (--access-log)
    supervisor = [line for line in lines if "workers WITHOUT redis" in line]
    assert supervisor, lines
    assert " w0 " in supervisor[0]


def test_unknown_log_level_is_a_usage_error() -> None:
    out = subprocess.run(
        [FRESHET, "serve", "--log-level", "verbose"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "Invalid value for '--log-level'" in out.stderr
    assert "'verbose' is not one of" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_fails_at_once_before_any_backend_loads(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [FRESHET, "serve", "--port", str(port), "--workers", workers]
        args += ["--config", str(write_config(tmp_path, CONFIG)), "--log-level", "info"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert out.returncode == 2, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}: port {port} is already in use" in out.stderr
    assert "backend det ready" not in out.stderr  # nothing was started
    assert "backends ready" not in out.stderr
    assert "Traceback" not in out.stderr
