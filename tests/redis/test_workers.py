"""``freshet serve --workers 2``: two processes on one port, sharing state through Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.redis.gateways import ADMIN, backend, create_key
from tests.support.server import FRESHET, free_port, write_config

pytestmark = pytest.mark.slow

BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def test_two_workers_share_one_port_and_one_rate_limit(tmp_path: Path, redis_url: str) -> None:
    rpm = 12
    config = {"backends": [backend("det")], "groups": {"auto": ["det"]}, "limits": {"window_s": 30}}
    secret = create_key(redis_url, tmp_path, "w", "--rpm", str(rpm))
    port = free_port()
    env = {
        **os.environ,
        "FRESHET_REDIS_URL": redis_url,
        "FRESHET_ADMIN_KEY": ADMIN,
        "FRESHET_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("FRESHET_CONFIG", None)
    args = [FRESHET, "serve", "--port", str(port), "--workers", "2", "--log-level", "warning"]
    args += ["--config", str(write_config(tmp_path, config))]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    admin = {"authorization": f"Bearer {ADMIN}"}
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            try:  # a new connection each time: the kernel spreads them over the workers
                resp = httpx.get(url + "/freshet/state", headers=admin, timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if resp.status_code == 200 and httpx.get(url + "/ready").status_code == 200:
                pids.add(resp.json()["pid"])
        assert len(pids) == 2, (tmp_path / "serve.log").read_text()
        while time.time() % 30 > 20:  # not near the end of a 30 s window
            time.sleep(0.5)
        headers = {"authorization": f"Bearer {secret}"}
        codes = [
            httpx.post(url + "/v1/chat/completions", json=BODY, headers=headers, timeout=30)
            for _ in range(2 * rpm)
        ]
        # One limit for both workers: rpm admitted, the rest refused.
        assert [r.status_code for r in codes] == [200] * rpm + [429] * rpm
        assert len({r.headers["x-request-id"] for r in codes}) == 2 * rpm
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
