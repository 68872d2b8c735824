"""Helpers for tests of several real gateway processes sharing one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import FRESHET, Server, running_server

ADMIN = "test-admin-key"
USD_PER_TOKEN = 0.001  # output list price; energy, capex and input are free
FREE = {"watts_idle": 0, "watts_active": 0, "capex_per_hour": 0}


def backend(backend_id: str, **params: Any) -> dict[str, Any]:
    return {
        "id": backend_id,
        "type": "deterministic",
        "model": f"m-{backend_id}",
        "knowledge_cutoff": "2024-01-01",
        "profile": FREE,
        "energy": {"meter": "model"},
        "list_price": {"output_per_mtok": USD_PER_TOKEN * 1e6},
        **params,
    }


def create_key(redis_url: str, tmp: Path, name: str, *options: str) -> str:
    """``freshet keys create`` against the shared store; returns the printed key."""
    env = {**os.environ, "FRESHET_REDIS_URL": redis_url, "FRESHET_DATA_DIR": str(tmp / "cli")}
    out = subprocess.run(
        [FRESHET, "keys", "create", "--name", name, *options],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    secret = out.stdout.decode().strip()
    assert secret.startswith("fk-"), out
    return secret


@contextlib.contextmanager
def gateways(
    tmp: Path, config: Mapping[str, Any], redis_url: str, n: int = 3
) -> Iterator[list[Server]]:
    """``n`` gateways, each with its own data directory, all on ``redis_url``."""
    env = {"FRESHET_REDIS_URL": redis_url, "FRESHET_ADMIN_KEY": ADMIN}
    with contextlib.ExitStack() as stack:
        servers = []
        for i in range(n):
            directory = tmp / f"gw{i}"
            directory.mkdir()
            servers.append(stack.enter_context(running_server(directory, config, env)))
        yield servers


def admin_get(server: Server, path: str) -> Any:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        resp = client.get(path, headers={"authorization": f"Bearer {ADMIN}"})
        resp.raise_for_status()
        return resp.json()


def report(server: Server) -> dict[str, Any]:
    data: dict[str, Any] = admin_get(server, "/freshet/cost/report?group_by=key")
    return data


def usage_ids(server: Server) -> list[str]:
    ids: list[str] = []
    offset = 0
    while True:
        page = admin_get(server, f"/freshet/usage?limit=1000&offset={offset}")
        ids += [r["request_id"] for r in page["data"]]
        offset += len(page["data"])
        if offset >= page["total"] or not page["data"]:
            return ids


def wait_for_records(servers: Sequence[Server], n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        counts = [report(s)["totals"]["requests"] for s in servers]
        if all(c == n for c in counts):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"records per gateway {counts}, expected {n} each")
        time.sleep(0.2)


async def spread(
    servers: Sequence[Server],
    n: int,
    body: Mapping[str, Any],
    secret: str,
    concurrency: int = 200,
    done_at: list[float] | None = None,
) -> list[httpx.Response]:
    """``n`` requests, round-robin over ``servers``, at most ``concurrency`` at once;
    ``done_at`` gets each one's completion time (``time.monotonic``)."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"authorization": f"Bearer {secret}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            async with gate:
                url = servers[i % len(servers)].url + "/v1/chat/completions"
                resp = await client.post(url, json=dict(body), headers=headers)
                if done_at is not None:
                    done_at.append(time.monotonic())
                return resp

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


def cli_report(redis_url: str, data_dir: Path) -> Any:
    """``freshet cost report --by key --json`` with its own data directory."""
    env = {**os.environ, "FRESHET_REDIS_URL": redis_url, "FRESHET_DATA_DIR": str(data_dir)}
    out = subprocess.run(
        [FRESHET, "cost", "report", "--by", "key", "--json"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)
