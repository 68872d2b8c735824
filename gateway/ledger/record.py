"""Usage records: what each request that reached a backend really used and cost."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

Status = Literal["ok", "error", "client_disconnected"]


class UsageRecord(Struct, kw_only=True):
    """One per request that reached a backend (streamed or not, failed or not).

    A field added later must have a default, and a step in
    :mod:`gateway.ledger.migrations` that adds its column with that default: records
    written before it (ledger rows, Redis entries, spool lines) then read back with it.
    """

    request_id: str
    ts: float  # unix time the request arrived
    key: str | None
    group: str | None  # the name the client asked for when it was a group
    requested_model: str
    backend: str
    backend_kind: str
    model: str
    adapter: str | None
    knowledge_cutoff: str | None
    operation: str
    stream: bool
    status: Status
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    duration_s: float
    joules: float | None
    energy_source: str | None
    joules_input: float
    joules_output: float
    usd_energy: float
    usd_capex: float
    usd_list: float
    usd_input: float
    usd_output: float
    usd_total: float
    fallbacks: int = 0


COLUMNS: tuple[str, ...] = tuple(UsageRecord.__struct_fields__)


_decode_json = msgspec.json.Decoder(UsageRecord).decode


def decode_json(data: bytes | str) -> UsageRecord:
    """A record as written to Redis or a spool by any Freshet, older or newer: a field it
    lacks (written before the field existed) takes its default; a field this Freshet
    does not know (written by a newer one) is ignored. Raises ``msgspec.DecodeError``
    (``ValidationError`` included) for what is not a record."""
    return _decode_json(data)
