"""Workers of `freshet serve --workers N` open the key store and the ledger at the same
moment; switching a new SQLite file to WAL takes a lock SQLite's busy timeout does not wait
for ("database is locked" took a worker down in a CI run). Many processes opening one new
file at once all succeed."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from gateway.state.keys_sqlite import SQLiteKeyStore


def _open(data_dir: str, start: Any) -> None:
    start.wait()  # every process at the same moment
    store = SQLiteKeyStore(Path(data_dir))
    store._db()


def test_many_processes_open_one_new_key_store_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        data = tmp_path / f"round-{round_}"
        start = ctx.Barrier(8)
        procs = [ctx.Process(target=_open, args=(str(data), start)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * 8
