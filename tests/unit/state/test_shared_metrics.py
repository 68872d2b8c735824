"""/metrics says whether limits are shared, and counts Redis outages and spooled records."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.settings import load_settings
from gateway.state.metrics import SharedStateCollector
from gateway.state.shared import SharedState
from gateway.telemetry.metrics import SHARED_STATE_SAMPLES
from tests.support.server import free_port


def _scrape(shared: SharedState) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(SharedStateCollector(shared))
    text = generate_latest(registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_local_state_reports_per_process_limits(tmp_path: Path) -> None:
    shared = SharedState(load_settings(env={"FRESHET_DATA_DIR": str(tmp_path)}))
    assert _scrape(shared) == {"freshet_limits_shared": 0.0}


@pytest.mark.asyncio
async def test_redis_outage_is_a_metric(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    shared = SharedState(
        load_settings(env={"FRESHET_DATA_DIR": str(tmp_path), "FRESHET_REDIS_URL": url})
    )
    assert shared.store is not None
    before = _scrape(shared)
    assert before["freshet_limits_shared"] == 1.0
    assert before["freshet_redis_up"] == 1.0
    shared.store.failed(ConnectionRefusedError(111, "refused"), "test")  # starts a recovery probe
    shared.store.stats.local_admissions += 3
    try:
        after = _scrape(shared)
    finally:
        await shared.store.aclose()
    assert after["freshet_limits_shared"] == 0.0
    assert after["freshet_redis_up"] == 0.0
    assert after["freshet_redis_outages_total"] == 1.0
    assert after["freshet_limits_local_admissions_total"] == 3.0
    assert after["freshet_ledger_spooled_bytes"] == 0.0
    assert set(after) == set(SHARED_STATE_SAMPLES)  # what telemetry declares /metrics shows
