"""Usage records in the ledger: their columns, and decoding them from any version.

The record type itself is a contract (:class:`gateway.outcome.UsageRecord`).
"""

from __future__ import annotations

import msgspec

from gateway.outcome import UsageRecord

COLUMNS: tuple[str, ...] = tuple(UsageRecord.__struct_fields__)


_decode_json = msgspec.json.Decoder(UsageRecord).decode


def decode_json(data: bytes | str) -> UsageRecord:
    """A record as written to Redis or a spool by any Freshet, older or newer: a field it
    lacks (written before the field existed) takes its default; a field this Freshet
    does not know (written by a newer one) is ignored. Raises ``msgspec.DecodeError``
    (``ValidationError`` included) for what is not a record."""
    return _decode_json(data)
