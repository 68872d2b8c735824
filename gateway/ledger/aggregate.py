"""Folding the ledger stream into the aggregate: the consumer side of :mod:`gateway.ledger.redis`.

Every gateway process is a consumer in the group ``aggregators``. One Lua script per batch
stores each record under its request id unless it is there already (``HSETNX``), numbers
the new ones (``INCR`` + ``ZADD``: the order mirrors copy in), and ``XACK``s and ``XDEL``s
the entries, all atomically: an entry is acknowledged exactly when its record is in the
aggregate, and a record sent twice is counted once. Entries a dead consumer left pending
are claimed after :data:`CLAIM_IDLE_MS`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from typing import Any

from redis.exceptions import ResponseError

from gateway.state.redis import RedisStore

GROUP = "aggregators"
CLAIM_IDLE_MS = 15_000
BATCH = 500

_AGGREGATE = """
local n = 0
for i = 2, #ARGV, 3 do
  if ARGV[i + 1] ~= '' and redis.call('HSETNX', KEYS[2], ARGV[i + 1], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[i + 1])
    n = n + 1
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return n
"""


class Aggregator:
    def __init__(self, store: RedisStore, stream: str, records: str, seq: str, count: str) -> None:
        self._store = store
        self.stream = stream
        self._keys = [stream, records, seq, count]
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._aggregate = store.client.register_script(_AGGREGATE)

    async def ensure_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self._store.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)

    async def fold(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        args: list[Any] = [GROUP]
        for entry_id, fields in entries:
            if b"id" in fields:
                args += [entry_id, fields[b"id"], fields[b"r"]]
            else:  # not ours (or emptied): acknowledge and drop it
                args += [entry_id, b"", b""]
        return int(await self._aggregate(keys=self._keys, args=args))

    async def once(self, block_ms: int | None = None) -> int:
        try:
            reply: Any = await self._store.client.xreadgroup(
                GROUP, self.consumer, {self.stream: ">"}, count=BATCH, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # Redis restarted without the group
            return 0
        folded = 0
        for _stream, entries in reply or []:
            if entries:
                folded += await self.fold(entries)
        return folded

    async def claim_orphans(self) -> None:
        reply: list[Any] = await self._store.client.xautoclaim(
            self.stream, GROUP, self.consumer, CLAIM_IDLE_MS, count=BATCH
        )
        entries = reply[1]
        if entries:
            await self.fold([e for e in entries if e and e[1] is not None])
