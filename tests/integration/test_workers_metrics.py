"""``freshet serve --workers 2``: ``/metrics`` reports the whole process group whichever
worker answers the scrape (no counter that goes back), and every trace says whose it is."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import FRESHET, Server, free_port, write_config

pytestmark = pytest.mark.slow

DET = {"id": "det", "type": "deterministic", "model": "m-det", "knowledge_cutoff": "2024-01-01"}
CONFIG = {"backends": [DET], "groups": {"auto": ["det"]}}
CHAT = json.dumps(
    {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
)
COUNT = re.compile(
    r'^gen_ai_server_request_duration_seconds_count\{[^}]*gen_ai_operation_name="chat"[^}]*\} '
    r"(\S+)$",
    re.M,
)


@contextlib.contextmanager
def _workers(tmp: Path) -> Iterator[Server]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRESHET_", "PROMETHEUS_"))}
    env["FRESHET_DATA_DIR"] = str(tmp / "data")
    args = [FRESHET, "serve", "--port", str(port), "--workers", "2", "--access-log"]
    args += ["--config", str(write_config(tmp, CONFIG)), "--log-level", "info"]
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, port, log, tmp / "data")
    try:
        deadline = time.monotonic() + 90
        # Both workers up: each logs its backends' readiness.
        while server.log_text().count("1 of 1 backends ready") < 2:
            assert proc.poll() is None, server.log_text()
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _chat(server: Server) -> None:
    request = urllib.request.Request(
        server.url + "/v1/chat/completions",
        data=CHAT.encode(),
        headers={"content-type": "application/json", "connection": "close"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        resp.read()


def _requests_total(server: Server) -> float:
    """Chat requests on one scrape (a new connection: any worker may answer it)."""
    request = urllib.request.Request(server.url + "/metrics", headers={"connection": "close"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(v) for v in COUNT.findall(text))


def _served_by(server: Server) -> set[str]:
    return set(
        re.findall(r" w(\d) freshet\.access: POST /v1/chat/completions 200", server.log_text())
    )


def test_scrapes_report_the_whole_process_group(tmp_path: Path) -> None:
    with _workers(tmp_path) as server:
        made = 0
        seen: list[float] = []
        # Requests until both workers have served some (the kernel spreads connections).
        while made < 8 or _served_by(server) != {"1", "2"}:
            assert made < 300, "one worker served every request"
            _chat(server)
            made += 1
            total = _requests_total(server)
            # Never more than made, never less than the scrape before (no reset), and at
            # most the last answers still on their way to the metrics (a worker records a
            # request just after its last byte; a busy machine may delay that a little).
            assert made - 2 <= total <= made, (made, total)
            assert not seen or total >= seen[-1], seen
            seen.append(total)
        deadline = time.monotonic() + 10
        while _requests_total(server) != made:
            assert time.monotonic() < deadline, (made, seen)
            time.sleep(0.05)
        # Eight scrapes, whichever worker answers each: the same total, all of them.
        assert [_requests_total(server) for _ in range(8)] == [made] * 8
        assert " uvicorn.access: " not in server.log_text()  # one access log: ours

        # Traces are each worker's own; every row says whose.
        workers = set()
        for _ in range(20):
            with urllib.request.urlopen(server.url + "/freshet/traces?limit=500") as resp:
                rows = json.loads(resp.read())
            workers |= {row["worker"] for row in rows}
            if workers == {1, 2}:
                break
        assert workers, workers
        assert workers <= {1, 2}, workers
