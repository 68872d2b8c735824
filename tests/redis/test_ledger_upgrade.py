"""The shared ledger across versions: stream entries written by another Freshet (an older
one, before a field existed; a newer one, with a field this one does not know) reach the
aggregate and the mirror's reports; an entry no version can read is left out, logged, and
does not hold back the ones after it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.ledger.redis import RedisLedger
from gateway.ledger.reports import cost_report
from gateway.ledger.sqlite import UsageQuery
from gateway.settings import RedisSettings
from gateway.state.redis import RedisStore

FIXTURE = Path(__file__).parents[1] / "fixtures" / "ledger" / "redis-entries-2026-12-06.json"


def entries() -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return list(data["entries"])


@pytest_asyncio.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(RedisSettings(url=redis_url))
    await s.start()
    yield s
    await s.aclose()


@pytest.mark.asyncio
async def test_entries_of_other_versions_reach_the_reports(
    store: RedisStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = RedisLedger(store, tmp_path)
    await ledger.start()
    try:
        shapes = entries()
        await store.client.xadd(ledger.stream, shapes[0]["fields"])
        await store.client.xadd(ledger.stream, {"id": "broken", "r": '{"request_id": "br'})
        for entry in shapes[1:]:
            await store.client.xadd(ledger.stream, entry["fields"])
        deadline = time.monotonic() + 10
        while (await ledger.query(UsageQuery()))[1] < 3:
            assert time.monotonic() < deadline
            await ledger.flush()
        records, total = await ledger.query(UsageQuery())
        assert total == 3
        assert {r.request_id: r.fallbacks for r in records} == {
            "redis-fixture-0": 1,
            "redis-fixture-1": 0,  # written before the field: its default
            "redis-fixture-2": 0,
        }
        assert ledger.mirror.skipped == 1
        assert "'broken' is not readable" in caplog.text
        report = await cost_report(ledger.rows, "key", UsageQuery())
        assert {row.value: row.requests for row in report.rows} == {"alice": 2, None: 1}
        assert report.totals.errors == 1
    finally:
        await ledger.aclose()
