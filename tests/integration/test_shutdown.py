"""SIGTERM with requests in flight (issue #16.5): a request that ends within the grace is
answered in full; past the grace, a stream gets an error event and ``[DONE]``, a request
waiting for its whole answer gets 503 with ``Retry-After``; each is recorded "shutdown";
the ledger is flushed before the process exits; new requests are refused with 503."""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.server import running_server

GRACE_S = 2.0
CONFIG = {
    "server": {"shutdown_grace_s": GRACE_S},
    "backends": [
        # 5 tokens a second: 100 tokens take 20 s, far past the grace.
        {
            "id": "slow",
            "type": "deterministic",
            "model": "slow",
            "knowledge_cutoff": "2024-06-01",
            "tokens_per_s": 5,
            "max_output_tokens": 1000,
        },
        {
            "id": "quick",
            "type": "deterministic",
            "model": "quick",
            "knowledge_cutoff": "2024-06-01",
            "tokens_per_s": 10,
        },
    ],
}


def _post(port: int, body: dict[str, Any], out: dict[str, Any]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            json.dumps(body),
            {"content-type": "application/json"},
        )
        resp = conn.getresponse()
        out["status"] = resp.status
        out["headers"] = dict(resp.getheaders())
        out["request_id"] = resp.getheader("x-request-id")
        out["body"] = resp.read()
    except (OSError, http.client.HTTPException) as exc:  # recorded for the assertion
        out["error"] = repr(exc)
    finally:
        conn.close()


def _chat(model: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def test_sigterm_ends_requests_past_the_grace_cleanly(tmp_path: Path) -> None:
    results: dict[str, dict[str, Any]] = {"stream": {}, "json": {}, "quick": {}}
    with running_server(tmp_path, CONFIG) as server:
        threads = [
            threading.Thread(
                target=_post, args=(server.port, _chat("slow", 100, True), results["stream"])
            ),
            threading.Thread(
                target=_post, args=(server.port, _chat("slow", 100, False), results["json"])
            ),
            # 8 tokens at 10/s: ends within the grace.
            threading.Thread(
                target=_post, args=(server.port, _chat("quick", 8, False), results["quick"])
            ),
        ]
        for t in threads:
            t.start()
        time.sleep(1.0)  # all three are in flight
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        code = server.proc.wait(timeout=60)
        log = server.log_text()
    # uvicorn re-raises the signal once it has shut down cleanly: killed by SIGTERM.
    assert code in (0, -signal.SIGTERM), log
    for name, result in results.items():
        assert "error" not in result, (name, result, log)

    quick = results["quick"]
    assert quick["status"] == 200, quick
    assert json.loads(quick["body"])["usage"]["completion_tokens"] == 8

    plain = results["json"]
    assert plain["status"] == 503, plain
    assert plain["headers"]["retry-after"] == "1"
    assert json.loads(plain["body"])["error"]["code"] == "server_shutting_down"

    stream = results["stream"]
    assert stream["status"] == 200
    events = [line[6:] for line in stream["body"].split(b"\n\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]", events[-3:]
    assert json.loads(events[-2])["error"]["code"] == "server_shutting_down"
    assert len(events) > 3  # it had streamed before the grace ended

    # The ledger was flushed before the exit: one record each, the cut ones "shutdown".
    with sqlite3.connect(tmp_path / "data" / "ledger.sqlite3") as conn:
        rows = dict(conn.execute("SELECT request_id, status FROM usage").fetchall())
    assert rows[quick["request_id"]] == "ok"
    assert rows[plain["request_id"]] == "shutdown"
    assert rows[stream["request_id"]] == "shutdown"
    assert "Traceback" not in log


def test_a_request_arriving_while_draining_is_refused_with_503(tmp_path: Path) -> None:
    config = {**CONFIG, "server": {"shutdown_grace_s": 5.0}}
    busy: dict[str, Any] = {}
    late: dict[str, Any] = {}
    with running_server(tmp_path, config) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", "/health")  # a keep-alive connection, open before the signal
        conn.getresponse().read()
        worker = threading.Thread(target=_post, args=(server.port, _chat("slow", 10, False), busy))
        worker.start()  # 2 s of work keeps the server draining
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                json.dumps(_chat("quick", 2, False)),
                {"content-type": "application/json"},
            )
            resp = conn.getresponse()
            late = {"status": resp.status, "body": resp.read(), "headers": dict(resp.getheaders())}
        except (ConnectionError, http.client.HTTPException) as exc:
            late = {"closed": repr(exc)}  # the server closed the idle connection first
        finally:
            conn.close()
        worker.join(timeout=60)
        server.proc.wait(timeout=60)
    assert busy.get("status") == 200, busy  # finished within the grace
    if "status" in late:
        assert late["status"] == 503, late
        assert json.loads(late["body"])["error"]["code"] == "server_shutting_down"
        assert late["headers"]["retry-after"] == "1"
