"""Run the real ``freshet serve`` as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

FRESHET = str(Path(sys.executable).with_name("freshet"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def usage_record(server: Server, request_id: str, deadline_s: float = 10.0) -> dict[str, Any]:
    """The request's one row in the server's SQLite ledger, once the writer has put it
    there (it batches: wait up to ``deadline_s``)."""
    deadline = time.monotonic() + deadline_s
    with sqlite3.connect(server.data_dir / "ledger.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        while True:
            rows = conn.execute("SELECT * FROM usage WHERE request_id = ?", (request_id,))
            found = [dict(r) for r in rows]
            if found or time.monotonic() > deadline:
                assert len(found) == 1, request_id
                return found[0]
            time.sleep(0.1)


def write_config(tmp: Path, config: Mapping[str, object]) -> Path:
    path = tmp / "freshet.yaml"
    path.write_text(yaml.safe_dump(dict(config)))
    return path


@contextlib.contextmanager
def running_server(
    tmp: Path,
    config: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 60.0,
) -> Iterator[Server]:
    port = free_port()
    args = [FRESHET, "serve", "--port", str(port), "--log-level", "warning"]
    if config is not None:
        args += ["--config", str(write_config(tmp, config))]
    full_env = {
        **os.environ,
        "FRESHET_DATA_DIR": str(tmp / "data"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    full_env.pop("FRESHET_CONFIG", None)
    log = tmp / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    server = Server(proc, port, log, tmp / "data")
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"freshet serve exited with {proc.returncode}:\n{server.log_text()}"
                )
            with contextlib.suppress(OSError):
                if server.get("/ready")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"freshet serve not ready in {ready_timeout}s:\n{server.log_text()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
