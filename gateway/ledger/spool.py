"""A bounded on-disk buffer for usage records while the shared ledger is unreachable.

Each process appends to its own file ``<data_dir>/spool/<host>-<pid>-<nonce>.jsonl``
(one JSON record a line), holding an exclusive ``flock`` on it for its lifetime. When the
ledger is back, the file is read and emptied in one step (nothing can be appended in
between: both run on the event loop without awaiting). A process that finds another's
file unlocked at start knows its writer is gone and adopts the records. Writes reach the
OS page cache, like SQLite's ``synchronous=NORMAL``: they survive the process, not the
machine. Past ``max_bytes`` records are dropped with an error in the log and counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import IO

import msgspec

from gateway.ledger.record import decode_json
from gateway.outcome import UsageRecord

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self.path = directory / name
        self.dropped = 0
        self._file: IO[bytes] | None = None
        self._size = 0

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    @property
    def size(self) -> int:
        return self._size

    def append(self, records: list[UsageRecord]) -> None:
        assert self._file is not None
        lines = [_encode(r) + b"\n" for r in records]
        room = self.max_bytes - self._size
        keep: list[bytes] = []
        for line in lines:
            if len(line) > room:
                break
            keep.append(line)
            room -= len(line)
        if keep:
            data = b"".join(keep)
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
        lost = len(lines) - len(keep)
        if lost:
            self.dropped += lost
            log.error(
                "usage-record spool full (%d bytes): %d records DROPPED (%d in all)",
                self.max_bytes,
                lost,
                self.dropped,
            )

    def drain(self) -> list[UsageRecord]:
        """Every record in this process's file; the file is left empty."""
        if self._file is None or self._size == 0:
            return []
        data = self.path.read_bytes()
        self._file.truncate(0)
        self._file.seek(0)
        self._size = 0
        return _parse(data, self.path)

    def adopt_orphans(self) -> int:
        """Move the records of processes that died with a non-empty spool into this one's
        (so they stay on disk until sent); returns how many."""
        adopted = 0
        for path in sorted(self.directory.glob("*.jsonl")):
            if path == self.path:
                continue
            with path.open("r+b") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                records = _parse(f.read(), path)
                self.append(records)
                adopted += len(records)
                path.unlink()
        if adopted:
            log.warning("adopted %d usage records from a previous process's spool", adopted)
        return adopted

    def close(self) -> None:
        if self._file is not None:
            empty = self._size == 0
            self._file.close()
            self._file = None
            if empty:
                with contextlib.suppress(OSError):
                    self.path.unlink()


def _parse(data: bytes, path: Path) -> list[UsageRecord]:
    out: list[UsageRecord] = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(decode_json(line))
        except msgspec.DecodeError:
            # A line cut short by a crash mid-write (or a record no version could read).
            log.exception("spool %s line %d is not a record; skipped", path.name, n)
    return out
