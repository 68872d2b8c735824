"""How a request went, as the flow hands it to its observers (telemetry, the ledger,
``usage_recorded`` plugins): each backend :class:`Attempt` that failed before its first
byte, the :class:`Outcome` of the generation, filled in as the stream runs, and the one
:class:`UsageRecord` made of it."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from gateway.backend import BackendUsage, ToolCall, ToolCallDelta
from gateway.cost import Metering, Quote
from gateway.errors import FreshetError


class Attempt(Struct, kw_only=True, frozen=True):
    backend_id: str
    error: str
    status: int


class Outcome(Struct, kw_only=True):
    """How a generation ended, filled in as the stream runs (for usage and the ledger)."""

    text_parts: list[str] = msgspec.field(default_factory=list)
    tool_call_parts: list[ToolCallDelta] = msgspec.field(default_factory=list)
    finish_reason: str | None = None
    stop_sequence: str | None = None  # the stop string that ended the output, when known
    usage: BackendUsage | None = None
    error: FreshetError | None = None
    client_disconnected: bool = False
    shutdown: bool = False  # ended by the gateway stopping, past its grace period
    metering: Metering | None = None
    chunks: int = 0
    ttft_s: float | None = None
    prompt_tokens_estimate: int = 0
    prompt_tokens: int | None = None  # the backend's own count, as soon as it says it
    quote: Quote | None = None  # what the router expected of the deployment that serves
    finalized: bool = False

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def tool_calls(self) -> list[ToolCall]:
        """The tool calls the streamed pieces add up to, in the order of their index."""
        calls: dict[int, tuple[str, str, list[str]]] = {}
        for part in self.tool_call_parts:
            call_id, name, args = calls.get(part.index, ("", "", []))
            args.append(part.arguments)
            calls[part.index] = (part.id or call_id, part.name or name, args)
        return [
            ToolCall(id=call_id, name=name, arguments="".join(args))
            for _, (call_id, name, args) in sorted(calls.items())
        ]

    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens: the backend's final usage, else its early prompt
        count (or the estimate) and the chunks that were delivered."""
        usage = self.usage
        if usage is not None:
            return usage.prompt_tokens, usage.completion_tokens
        prompt = (
            self.prompt_tokens if self.prompt_tokens is not None else self.prompt_tokens_estimate
        )
        return prompt, self.chunks


# "shutdown": the gateway was stopping and ended the request itself (past its grace).
Status = Literal["ok", "error", "client_disconnected", "shutdown"]


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
    # When more than one backend was tried: a JSON array with one object per attempt, in
    # order: {backend, status, error_code?, prompt_tokens, completion_tokens, joules?,
    # usd_total} (see AttemptUsage). The record's totals (tokens served aside) include the
    # joules and dollars of the failed attempts.
    attempts: str | None = None
    # Parts of prompt_tokens and completion_tokens, as the backend reported them
    # (BackendUsage): prompt tokens read from and written to a prompt cache, and completion
    # tokens spent reasoning. 0 for records written before they were kept (schema v3).
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    # What the router's quote for the deployment that served expected (after the learned
    # correction, see gateway.state.quotes), beside the actual ttft_s, duration_s, joules
    # and usd_total above. None for records written before they were kept (schema v4), and
    # for requests that had no quote.
    quoted_ttft_s: float | None = None
    quoted_duration_s: float | None = None
    quoted_joules: float | None = None
    quoted_usd: float | None = None


class AttemptUsage(Struct, kw_only=True, omit_defaults=True):
    """One backend tried for a request that tried more than one (``UsageRecord.attempts``)."""

    backend: str
    status: str  # ok | error | client_disconnected | shutdown
    error_code: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    joules: float | None = None
    usd_total: float = 0.0
