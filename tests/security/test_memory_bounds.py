"""Issue 17, point 5: what a gateway keeps about requests (traces, metric labels) stays
bounded however large the strings clients send; refused requests cost nothing kept."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest

from gateway.api.browser import BrowserGuard
from gateway.telemetry.spans import MAX_CLIENT_VALUE
from tests.security.gateways import CHAT, CONFIG, HI, JSON, gateway, send
from tests.support.server import running_server

MiB = 1 << 20


def _chat(model: str) -> bytes:
    return json.dumps({"model": model, "messages": HI, "max_tokens": 2}).encode()


@pytest.mark.asyncio
async def test_large_names_are_refused_and_nothing_large_is_kept(tmp_path: Path) -> None:
    server = {"max_body_bytes": 4 * MiB, "host": "0.0.0.0"}  # every Host answered
    async with gateway(tmp_path, server=server, env={"FRESHET_AUTH": "off"}) as client:
        assert not BrowserGuard("0.0.0.0").hosts_checked
        for i in range(20):
            answer = await send(client.app, "POST", CHAT, JSON, _chat(f"{i}" + "m" * MiB))
            assert answer.status == 400
            assert json.loads(answer.body)["error"]["param"] == "model"
            assert len(answer.body) < 2000
        # Names the edge lets through (unknown: 404), and a huge Host, are cut when kept.
        name = "u" * 256
        host = b"h" * 100_000
        for _ in range(20):
            answer = await send(client.app, "POST", CHAT, JSON, _chat(name), host=host)
            assert answer.status == 404
        traces = await client.get("/freshet/traces", params={"limit": 1000})
        assert len(traces.content) < 100_000, len(traces.content)
        newest = traces.json()[0]
        assert newest["model"] == name
        spans = (await client.get(f"/freshet/traces/{newest['trace_id']}")).json()["spans"]
        for span in spans:
            assert len(span["name"]) < 300
            for value in span["attributes"].values():
                assert len(str(value)) <= MAX_CLIENT_VALUE
        # An unknown model is never a metric label: no series per name.
        metrics = (await client.get("/metrics")).text
        assert "uuuu" not in metrics
        assert len(metrics) < 200_000


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_real_gateway_stays_small_under_large_names(tmp_path: Path) -> None:
    """The issue's measurement: 40 requests with a 3 MiB model name grew RSS from 81 to
    332 MB and /freshet/traces to 240 MiB."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the gateway's RSS")
    config = {**CONFIG, "server": {"max_body_bytes": 4 * MiB}}
    with running_server(tmp_path, config) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

        def post(body: bytes) -> int:
            conn.request("POST", CHAT, body=body, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status

        assert post(_chat("auto")) == 200
        for _ in range(3):
            post(_chat("m" * 3 * MiB))  # the allocator's first large blocks
        before = _rss_kib(server.proc.pid)
        statuses = {post(_chat(f"{i}" + "m" * 3 * MiB)) for i in range(40)}
        statuses |= {post(_chat(f"{i}" + "m" * 255)) for i in range(40)}
        after = _rss_kib(server.proc.pid)
        conn.close()
        status, traces = server.get("/freshet/traces?limit=1000")
        print(f"RSS {before} -> {after} KiB; /freshet/traces {len(traces)} bytes")
        assert status == 200
        assert len(traces) < 200_000, len(traces)
        assert after - before < 40 * 1024, (before, after)  # KiB: far below 40 x 3 MiB
        assert statuses == {400, 404}  # too long a name; unknown
