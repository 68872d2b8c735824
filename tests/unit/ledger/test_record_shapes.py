"""Usage records written by another Freshet version are read: from Redis (the mirror), and
from a spool a stopped process left. The fixture holds stream entries as the code of
2026-12-06 wrote them, one without a field that has a default (written before it
existed), and one with a field this version does not know (written by a newer one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.ledger.migrations import V0_COLUMNS, expected_columns
from gateway.ledger.record import decode_json
from gateway.ledger.spool import Spool
from gateway.outcome import UsageRecord

FIXTURE = Path(__file__).parents[2] / "fixtures" / "ledger" / "redis-entries-2026-12-06.json"
# Fields of UsageRecord added after the fixture was written (each with a default).
CACHE_COUNTS = ("cached_prompt_tokens", "cache_write_tokens", "reasoning_tokens")
QUOTED = ("quoted_ttft_s", "quoted_duration_s", "quoted_joules", "quoted_usd")
ADDED_SINCE = {"attempts", *CACHE_COUNTS, *QUOTED}


def entries() -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return list(data["entries"])


def test_the_fixture_has_the_three_shapes() -> None:
    shapes = [json.loads(e["fields"]["r"]) for e in entries()]
    # The fixture was written on 2026-12-06; fields added since are missing from all three.
    today = set(UsageRecord.__struct_fields__) - ADDED_SINCE
    assert set(shapes[0]) == today
    assert set(shapes[1]) == today - {"fallbacks"}
    assert set(shapes[2]) == today | {"region"}


def test_records_of_every_shape_decode() -> None:
    full, older, newer = (decode_json(e["fields"]["r"].encode()) for e in entries())
    assert full.request_id == "redis-fixture-0"
    assert full.fallbacks == 1
    assert (full.key, full.stream, full.prompt_tokens, full.usd_total) == (
        "alice",
        True,
        30,
        3.2e-06,
    )
    assert older.request_id == "redis-fixture-1"
    assert older.fallbacks == 0  # missing: its default
    assert older.key is None
    assert newer.request_id == "redis-fixture-2"
    assert (newer.status, newer.error_code) == ("error", "server_error")
    assert not hasattr(newer, "region")  # unknown: ignored
    for record in (full, older, newer):  # written before the cache counts were kept
        assert [getattr(record, name) for name in CACHE_COUNTS] == [0, 0, 0]
        assert [getattr(record, name) for name in QUOTED] == [None] * 4  # nor the quotes
    # Re-encoded, each is a record of today's shape.
    for record in (full, older, newer):
        assert set(json.loads(msgspec.json.encode(record))) == set(UsageRecord.__struct_fields__)


def test_what_is_not_a_record_is_an_error_not_a_guess() -> None:
    record = json.loads(entries()[0]["fields"]["r"])
    del record["usd_total"]  # a field without a default
    with pytest.raises(msgspec.ValidationError, match="usd_total"):
        decode_json(json.dumps(record))
    with pytest.raises(msgspec.DecodeError):
        decode_json(b'{"request_id": "cut sh')


def test_fields_added_after_version_0_have_defaults() -> None:
    """Old Redis entries and spool lines lack a field added later: it must have a default."""
    v0 = {name for name, _ in V0_COLUMNS}
    later = [c for c in expected_columns() if c.name not in v0]
    assert all(c.has_default for c in later), [c.name for c in later if not c.has_default]


def test_a_spool_left_by_an_older_process_is_adopted(tmp_path: Path) -> None:
    """Stopped while Redis was down, upgraded, started: the new process adopts the file."""
    directory = tmp_path / "spool"
    directory.mkdir()
    lines = [e["fields"]["r"].encode() + b"\n" for e in entries()]
    (directory / "old-host-4242-0a1b2c3d.jsonl").write_bytes(b"".join(lines))
    spool = Spool(directory, max_bytes=1 << 20)
    spool.open()
    try:
        assert spool.adopt_orphans() == 3
        drained = spool.drain()
    finally:
        spool.close()
    assert [r.request_id for r in drained] == [f"redis-fixture-{i}" for i in range(3)]
    assert [r.fallbacks for r in drained] == [1, 0, 0]
    assert [r.cached_prompt_tokens + r.reasoning_tokens for r in drained] == [0, 0, 0]
