"""The backend health model (gateway/state/health.py): failure rate over a sliding window
with a minimum volume, failures in a row, ejection time doubling to a cap, the ejected
share of a group, half-open probes, panic mode; and what operators see of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.errors import ConfigError
from gateway.settings import HealthSettings, load_settings
from gateway.state.health import Circuit, LocalHealth, Window
from tests.support.inprocess import wait_ready


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def model(clock: Clock, groups: dict[str, list[str]] | None = None, **rules: Any) -> LocalHealth:
    settings = HealthSettings(**{"consecutive_failures": 1000, **rules})
    return LocalHealth(settings, clock=clock, groups=groups)


def test_the_rate_needs_the_minimum_volume() -> None:
    clock = Clock()
    health = model(clock, failure_rate=0.5, min_requests=10)
    for _ in range(4):
        health.success("a")
        health.failure("a")
    health.failure("a")  # 5 of 9 failed: over the rate, under the volume
    assert health.circuit("a").state == "closed"
    health.success("a")
    health.failure("a")  # 6 of 11
    assert health.circuit("a").state == "open"
    assert health.unavailable() == {"a"}


def test_a_low_failure_rate_never_ejects() -> None:
    clock = Clock()
    health = model(clock, consecutive_failures=5)
    for i in range(10_000):  # 5 % failing, never five in a row
        if i % 20 == 0:
            health.failure("a")
        else:
            health.success("a")
        clock.now += 0.001
    assert health.circuit("a").state == "closed"
    assert health.circuit("a").ejections == 0
    view = health.view("a")
    assert view.requests == 10_000
    assert view.failure_rate == pytest.approx(0.05)


def test_the_window_slides() -> None:
    clock = Clock()
    health = model(clock, failure_rate=0.5, min_requests=10, window_s=10)
    for _ in range(9):
        health.failure("a")  # nine failures...
    clock.now += 11  # ...that leave the window
    for _ in range(9):
        health.success("a")
    health.failure("a")  # 1 of 10 now
    assert health.circuit("a").state == "closed"
    window = Window(10)
    window.add(0.0, True)
    window.add(5.0, False)
    assert window.counts(5.0) == (2, 1)
    assert window.counts(10.5) == (1, 0)  # the first slice has gone
    assert window.counts(30.0) == (0, 0)


def test_failures_in_a_row_eject_and_a_success_resets_the_count() -> None:
    clock = Clock()
    health = model(clock, consecutive_failures=5)
    for _ in range(4):
        health.failure("a")
    health.success("a")
    for _ in range(4):
        health.failure("a")
    assert health.circuit("a").state == "closed"
    health.failure("a")
    assert health.circuit("a").state == "open"
    assert health.view("a").consecutive_failures == 5


def test_ejection_time_doubles_to_the_cap_and_starts_again_after_a_quiet_while() -> None:
    clock = Clock()
    health = model(clock, consecutive_failures=1, ejection_s=5, max_ejection_s=30)
    lengths = []
    for _ in range(5):
        health.failure("a")
        circuit = health.circuit("a")
        assert circuit.state == "open"
        lengths.append(circuit.open_for_s)
        clock.now += circuit.open_for_s  # half-open: the probe fails
        assert health.circuit("a").state == "half_open"
    assert lengths == [5, 10, 20, 30, 30]
    health.success("a")  # the probe succeeds: closed
    assert health.circuit("a").state == "closed"
    clock.now += 29  # not long enough: the next ejection keeps doubling
    health.failure("a")
    assert health.circuit("a").open_for_s == 30
    clock.now += 30
    health.success("a")
    clock.now += 30  # closed for max_ejection_s: back to the first length
    health.failure("a")
    assert health.circuit("a").open_for_s == 5
    assert health.circuit("a").ejections == 7


def test_half_open_takes_a_limited_number_of_probes() -> None:
    clock = Clock()
    health = model(clock, consecutive_failures=1, ejection_s=5, half_open_requests=2)
    health.failure("a")
    assert not health.admit("a")  # open: no requests
    clock.now += 5
    assert health.unavailable() == frozenset()
    assert health.admit("a")
    assert health.admit("a")
    assert not health.admit("a")  # both probes are out
    assert health.unavailable() == {"a"}
    health.release("a")  # one ended without a verdict (cancelled, or the client's fault)
    assert health.unavailable() == frozenset()
    assert health.admit("a")
    health.success("a")  # a probe's first chunk closes the circuit
    assert health.circuit("a").state == "closed"
    assert health.admit("a")
    assert health.view("a").probes == 0


def test_a_failed_probe_ejects_again_and_a_stale_success_does_not_close() -> None:
    clock = Clock()
    health = model(clock, consecutive_failures=1, ejection_s=5)
    health.failure("a")
    health.success("a")  # a request from before the ejection answered: still open
    assert health.circuit("a").state == "open"
    clock.now += 5
    assert health.admit("a")
    health.failure("a")
    assert health.circuit("a").state == "open"
    assert health.circuit("a").open_for_s == 10


def test_adopting_the_same_shared_circuit_again_keeps_the_probes() -> None:
    clock = Clock()
    health = model(clock, consecutive_failures=1, ejection_s=5)
    shared = Circuit(state="open", opened_at=clock.now, open_for_s=5, ejections=1, streak=1)
    health.adopt("a", msgspec.structs.replace(shared))
    assert health.unavailable() == {"a"}
    clock.now += 5
    assert health.admit("a")  # the one probe
    health.adopt("a", msgspec.structs.replace(shared))  # the next poll: stored as open
    assert health.circuit("a").state == "half_open"
    assert not health.admit("a")  # still one probe out
    health.adopt("a", Circuit())  # another process's probe closed it
    assert health.admit("a")


def test_never_more_than_the_share_of_a_group_is_ejected() -> None:
    clock = Clock()
    groups = {"four": ["a", "b", "c", "d"], "pair": ["d", "e"]}
    health = model(clock, groups, consecutive_failures=1, max_ejection_percent=50)
    for backend in "abc":
        health.failure(backend)
    assert [health.circuit(b).state for b in "abc"] == ["open", "open", "closed"]
    assert health.view("c").capped == 1
    health.failure("e")  # one of the pair
    health.failure("d")  # its group of four is at its share (2), the pair at its (1)
    assert health.circuit("d").state == "closed"
    assert health.unavailable() == {"a", "b", "e"}
    lone = model(clock, {"one": ["x"]}, consecutive_failures=1, max_ejection_percent=50)
    lone.failure("x")  # at least one may be ejected (then panic mode serves it)
    assert lone.circuit("x").state == "open"


def test_the_view_says_when_an_ejection_ends_and_panic() -> None:
    clock = Clock()
    health = model(clock, consecutive_failures=1, ejection_s=5, window_s=10)
    health.failure("a")
    view = health.view("a")
    assert view.state == "open"
    assert view.ejected_until is not None
    assert view.ejections == 1
    assert not view.panic
    health.panic("auto", ["a"])
    assert health.view("a").panic
    assert health.view("a").panic_requests == 1
    assert dict(health.panics) == {"auto": 1}
    clock.now += 11
    assert not health.view("a").panic  # no panic within the window
    assert health.view("a").ejected_until is None  # half-open now


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"failure_rate": 1.5}, "health.failure_rate"),
        ({"min_requests": 0}, "health.min_requests"),
        ({"max_ejection_percent": 101}, "health.max_ejection_percent"),
        ({"ejection_s": 10, "max_ejection_s": 5}, "health.max_ejection_s"),
        ({"ejection": 5}, "health"),
    ],
)
def test_health_settings_are_validated(tmp_path: Path, section: dict[str, Any], key: str) -> None:
    path = tmp_path / "c.yaml"
    config = {
        "backends": [{"id": "a", "type": "deterministic", "knowledge_cutoff": "unknown"}],
        "health": section,
    }
    path.write_bytes(msgspec.yaml.encode(config))
    with pytest.raises(ConfigError) as info:
        load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    assert info.value.key is not None
    assert info.value.key.startswith(key)


def test_health_settings_defaults(tmp_path: Path) -> None:
    settings = load_settings(env={"FRESHET_DATA_DIR": str(tmp_path)})
    assert settings.health == HealthSettings(
        failure_rate=0.5,
        min_requests=10,
        window_s=10.0,
        consecutive_failures=5,
        ejection_s=5.0,
        max_ejection_s=30.0,
        max_ejection_percent=50.0,
        half_open_requests=1,
    )


# -- through the gateway: dispatch, routing, /freshet/backends and /metrics -----------------


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[AsyncTestClient[Any], Runtime]]:
    config = {
        "backends": [
            {
                "id": "broken",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "m-broken",
                "fail_before_first": True,
            },
            {
                "id": "flaky",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "m-flaky",
                "fail_after_tokens": 2,
            },
            {
                "id": "good",
                "type": "deterministic",
                "knowledge_cutoff": "unknown",
                "model": "m-good",
            },
        ],
        "groups": {"auto": ["broken", "good"], "alone": ["broken"]},
        "health": {"consecutive_failures": 3, "ejection_s": 30},
    }
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(settings, runtime)) as client:
        await wait_ready(client)
        yield client, runtime


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        **extra,
    }


async def metrics(
    client: AsyncTestClient[Any],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await client.get("/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def circuit_gauge(samples: dict[Any, float], backend: str) -> str:
    states = [
        dict(labels)["freshet_circuit_state"]
        for (name, labels), value in samples.items()
        if name == "freshet_backend_circuit_state"
        and dict(labels)["freshet_backend_id"] == backend
        and value == 1
    ]
    assert len(states) == 1, states
    return states[0]


@pytest.mark.asyncio
async def test_backends_and_metrics_agree_while_a_circuit_is_open(gateway: Any) -> None:
    client, _ = gateway
    for _ in range(3):  # three failures in a row (this config's consecutive_failures)
        resp = await client.post("/v1/chat/completions", json=chat("auto"))
        assert resp.status_code == 200
        assert resp.headers["x-freshet-backend"] == "good"
        assert "failed_over=1" in resp.headers["x-freshet-route"]
    resp = await client.post("/v1/chat/completions", json=chat("auto"))
    route = resp.headers["x-freshet-route"]
    assert "dropped=broken:unhealthy" in route
    assert "failed_over=0" in route  # not tried: it is ejected and good is not
    assert "panic" not in route
    listing = {b["id"]: b for b in (await client.get("/freshet/backends")).json()}
    broken = listing["broken"]
    assert broken["healthy"] is False
    assert broken["circuit"]["state"] == "open"
    assert broken["circuit"]["ejections"] == 1
    assert broken["circuit"]["ejected_until"] > 0
    assert broken["circuit"]["consecutive_failures"] == 3
    assert listing["good"]["healthy"] is True
    assert listing["good"]["circuit"]["state"] == "closed"
    samples = await metrics(client)
    for backend, b in listing.items():
        assert circuit_gauge(samples, backend) == b["circuit"]["state"]
        ejections = ("freshet_backend_ejections_total", (("freshet_backend_id", backend),))
        assert samples.get(ejections, 0) == b["circuit"]["ejections"]


@pytest.mark.asyncio
async def test_every_candidate_unhealthy_is_panic_mode_not_a_refusal(gateway: Any) -> None:
    client, _ = gateway
    for _ in range(3):
        resp = await client.post("/v1/chat/completions", json=chat("alone"))
        assert resp.status_code == 502  # tried and failed: a bad gateway, not a refusal
    resp = await client.post("/v1/chat/completions", json=chat("alone"))
    assert resp.status_code == 502  # still tried, although its circuit is open
    assert "broken" in resp.json()["error"]["message"]
    listing = {b["id"]: b for b in (await client.get("/freshet/backends")).json()}
    assert listing["broken"]["circuit"]["state"] == "open"
    assert listing["broken"]["circuit"]["panic"] is True
    samples = await metrics(client)
    assert samples[("freshet_route_panic_total", (("freshet_group", "alone"),))] == 1
    dry = (await client.get("/freshet/route", params={"model": "alone"})).json()
    assert dry["chosen"] == "broken"


@pytest.mark.asyncio
async def test_the_share_of_a_group_holds_through_the_gateway(gateway: Any) -> None:
    client, runtime = gateway
    for _ in range(3):
        await client.post("/v1/chat/completions", json=chat("auto"))
    assert runtime.health.circuit("broken").state == "open"
    runtime.health.failure("good")  # good fails too, three times in a row...
    runtime.health.failure("good")
    runtime.health.failure("good")  # ...but the share of "auto" allows one ejection only
    assert runtime.health.circuit("good").state == "closed"
    assert runtime.health.view("good").capped == 1


@pytest.mark.asyncio
async def test_failures_mid_stream_do_not_eject(gateway: Any) -> None:
    client, runtime = gateway
    for stream in (True, False) * 4:
        resp = await client.post("/v1/chat/completions", json=chat("m-flaky", stream=stream))
        assert resp.status_code == (200 if stream else 502)
    assert runtime.health.circuit("flaky").state == "closed"
    assert runtime.health.view("flaky").failures == 0
    assert runtime.health.view("flaky").requests == 8  # eight first chunks
