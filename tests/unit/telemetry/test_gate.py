"""The exporter's idle gate: the event loop counts the requests that have work for it,
and the exporter thread encodes and sends only when there are none (or, under sustained
load, once it has waited long enough)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from gateway.backend import Deployment, is_remote
from gateway.outcome import Attempt
from gateway.settings import load_settings
from gateway.telemetry.core import Telemetry
from gateway.telemetry.export import IdleGate, Pacer


class _Remote:
    remote = True


class _Local:
    pass


def _telemetry(tmp_path: Path) -> Telemetry:
    config = {
        "backends": [
            {"id": "far", "type": "deterministic", "knowledge_cutoff": "unknown", "model": "m"},
            {"id": "near", "type": "deterministic", "knowledge_cutoff": "unknown", "model": "m"},
        ],
        "groups": {"auto": ["far", "near"]},
    }
    path = tmp_path / "freshet.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(str(path), env={})
    backends: Any = {"far": _Remote(), "near": _Local()}
    return Telemetry(settings, backends, circuit_state=lambda _: "closed", ready=lambda: True)


def _dep(backend_id: str) -> Deployment:
    return Deployment(backend_id=backend_id, model="m", knowledge_cutoff=None, max_context=4096)


def test_only_an_explicit_remote_attribute_counts() -> None:
    assert is_remote(_Remote())
    assert not is_remote(_Local())
    assert not is_remote(type("Truthy", (), {"remote": 1})())


def test_requests_count_while_the_loop_has_work_for_them(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    gate = telemetry.idle
    a = telemetry.begin("req_a", "chat", {}, ("gw", 1))
    b = telemetry.begin("req_b", "chat", {}, ("gw", 1))
    assert gate.busy == 2
    a.attempting(_dep("far"), [])  # waits on a remote backend's first byte
    assert gate.busy == 1
    a.attempting(_dep("far"), [Attempt(backend_id="far", error="x", status=502)])
    assert gate.busy == 1  # still waiting: counted once
    b.attempting(_dep("near"), [])  # in-process: its work is the loop's
    assert gate.busy == 1
    a.answered()
    assert gate.busy == 2
    telemetry.end(a, 200, None)
    telemetry.end(b, 200, None)
    assert gate.busy == 0
    assert gate.wait()


def test_failover_and_a_client_leaving_while_waiting_keep_the_count(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    gate = telemetry.idle
    a = telemetry.begin("req_a", "chat", {}, ("gw", 1))
    a.attempting(_dep("far"), [])
    assert gate.busy == 0
    a.attempting(_dep("near"), [])  # fell over to an in-process backend
    assert gate.busy == 1
    telemetry.end(a, 200, None)
    assert gate.busy == 0
    b = telemetry.begin("req_b", "chat", {}, ("gw", 1))
    b.attempting(_dep("far"), [])
    telemetry.end(b, 499, "client_disconnected")  # gone before the first byte
    telemetry.end(b, 499, "client_disconnected")  # ended twice: counted once
    assert gate.busy == 0


def test_the_gate_waits_for_quiet_and_gives_up_after_its_limit() -> None:
    gate = IdleGate(max_wait_s=0.05)
    assert gate.wait()  # quiet: at once
    gate.enter()
    started = time.monotonic()
    assert not gate.wait()
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.01, gate.leave).start()
    started = time.monotonic()
    assert gate.wait()
    assert time.monotonic() - started < 0.05


def test_under_sustained_load_an_export_waits_once_then_keeps_up() -> None:
    gate = IdleGate(max_wait_s=0.05)
    gate.enter()  # never quiet
    pacer = Pacer(gate)
    started = time.monotonic()
    for _ in range(40 * Pacer.QUIET_EVERY):  # forty pauses' worth of spans if patient
        pacer()
    pacer.between()
    elapsed = time.monotonic() - started
    assert 0.05 <= elapsed < 0.05 * 3  # one wait for quiet, not forty


def test_an_unarmed_gate_counts_and_its_arming_reads_the_count() -> None:
    """Without an exporter the gate only counts (no lock a request); armed later, its
    event says what the count says at once."""
    gate = IdleGate(max_wait_s=0.01, armed=False)
    gate.enter()
    assert gate.busy == 1
    assert gate.wait()  # unarmed: nothing waits on it, it reads quiet
    gate.arm()
    assert not gate.wait()  # armed with a request in hand: busy
    gate.leave()
    assert gate.wait()
