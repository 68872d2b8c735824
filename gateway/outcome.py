"""How a request went, as the flow hands it to its observers (telemetry, the ledger):
each backend :class:`Attempt` that failed before its first byte, and the :class:`Outcome`
of the generation, filled in as the stream runs."""

from __future__ import annotations

import msgspec
from msgspec import Struct

from gateway.backend import BackendUsage
from gateway.cost import Metering
from gateway.errors import FreshetError


class Attempt(Struct, kw_only=True, frozen=True):
    backend_id: str
    error: str
    status: int


class Outcome(Struct, kw_only=True):
    """How a generation ended, filled in as the stream runs (for usage and the ledger)."""

    text_parts: list[str] = msgspec.field(default_factory=list)
    finish_reason: str | None = None
    usage: BackendUsage | None = None
    error: FreshetError | None = None
    client_disconnected: bool = False
    metering: Metering | None = None
    chunks: int = 0
    ttft_s: float | None = None
    prompt_tokens_estimate: int = 0
    finalized: bool = False

    @property
    def text(self) -> str:
        return "".join(self.text_parts)
