"""The on-disk spool of usage records: bounded, drained in one step, orphans adopted."""

from __future__ import annotations

from pathlib import Path

from gateway.ledger.spool import Spool
from gateway.outcome import UsageRecord
from tests.support.records import usage_record


def _record(request_id: str) -> UsageRecord:
    return usage_record(request_id)


def test_append_drain_and_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=4000)  # three records fit, a hundred do not
    spool.open()
    spool.append([_record(f"r{i}") for i in range(3)])
    assert [r.request_id for r in spool.drain()] == ["r0", "r1", "r2"]
    assert spool.drain() == []
    spool.append([_record(f"x{i}") for i in range(100)])  # far past 4,000 bytes
    kept = spool.drain()
    assert 0 < len(kept) < 100
    assert spool.dropped == 100 - len(kept)
    spool.close()
    assert not spool.path.exists()  # empty: removed


def test_a_dead_processs_spool_is_adopted(tmp_path: Path) -> None:
    dead = Spool(tmp_path, max_bytes=1 << 20)
    dead.open()
    dead.append([_record("a"), _record("b")])
    dead.close()  # its lock is released, as when a process dies; the file stays
    assert dead.path.exists()
    alive = Spool(tmp_path, max_bytes=1 << 20)
    alive.open()
    busy = Spool(tmp_path, max_bytes=1 << 20)
    busy.open()
    busy.append([_record("c")])  # a live process's file is left alone
    assert alive.adopt_orphans() == 2
    assert not dead.path.exists()
    assert [r.request_id for r in alive.drain()] == ["a", "b"]
    with busy.path.open("ab") as f:
        f.write(b'{"truncated')  # a crash mid-write leaves a broken last line
    busy.close()
    assert alive.adopt_orphans() == 1
    alive.close()
