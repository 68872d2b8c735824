"""The SQLite ledger writes a batch in a few multi-row statements: every record of a batch
of any size is stored once, field for field, and a request id already stored is ignored
(a retried flush) without losing the batch's other records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ledger.sqlite import SQLiteLedger, UsageQuery
from gateway.outcome import UsageRecord
from tests.support.records import usage_record


def _record(i: int, usd: float) -> UsageRecord:
    return usage_record(
        f"req-batch-{i:06d}",
        ts=1_765_000_000.0 + i,
        key="alice" if i % 2 else None,
        backend_kind="openai-compatible",
        stream=bool(i % 3),
        prompt_tokens=i,
        completion_tokens=2 * i,
        ttft_s=0.01 * i,
        duration_s=0.02 * i,
        joules=None if i % 5 else 1.5 * i,
        usd_list=usd,
        usd_input=usd / 3,
        usd_output=usd - usd / 3,
        usd_total=usd,
    )


async def _stored(ledger: SQLiteLedger, count: int) -> list[UsageRecord]:
    rows, total = await ledger.query(UsageQuery(limit=count + 10))
    assert total == count
    return sorted(rows, key=lambda r: r.request_id)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.sampled_from([1, 2, 3, 7, 64, 255, 256, 257, 600]),
    usd=st.floats(min_value=0, max_value=1, allow_subnormal=True),
)
def test_a_batch_of_any_size_is_stored_field_for_field(
    tmp_path_factory: pytest.TempPathFactory, size: int, usd: float
) -> None:
    async def run() -> None:
        ledger = SQLiteLedger(Path(tmp_path_factory.mktemp("ledger")))
        await ledger.start()
        try:
            batch = [_record(i, usd) for i in range(size)]
            for record in batch:
                ledger.record(record)
            await ledger.flush()
            assert await _stored(ledger, size) == batch
            # A flush retried after a failure writes records already stored: ignored.
            again = [*batch[: size // 2 + 1], _record(size, usd)]
            for record in again:
                ledger.record(record)
            await ledger.flush()
            assert await _stored(ledger, size + 1) == [*batch, _record(size, usd)]
        finally:
            await ledger.aclose()

    asyncio.run(run())
