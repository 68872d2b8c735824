"""A usage record for tests that need one: every field given, defaults that make sense for
a finished chat request, any field overridden by keyword."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.outcome import UsageRecord

_DEFAULTS: dict[str, Any] = {
    "key": None,
    "group": None,
    "requested_model": "m",
    "backend": "b",
    "backend_kind": "cpu",
    "model": "m",
    "adapter": None,
    "knowledge_cutoff": None,
    "operation": "chat",
    "stream": False,
    "status": "ok",
    "error_code": None,
    "prompt_tokens": 1,
    "completion_tokens": 1,
    "ttft_s": None,
    "duration_s": 0.0,
    "joules": None,
    "energy_source": None,
    "joules_input": 0.0,
    "joules_output": 0.0,
    "usd_energy": 0.0,
    "usd_capex": 0.0,
    "usd_list": 0.0,
    "usd_input": 0.0,
    "usd_output": 0.0,
    "usd_total": 0.0,
}


def usage_record(request_id: str, **fields: Any) -> UsageRecord:
    record = UsageRecord(request_id=request_id, ts=time.time(), **_DEFAULTS)
    return msgspec.structs.replace(record, **fields) if fields else record
