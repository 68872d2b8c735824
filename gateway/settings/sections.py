"""The config's sections as typed Structs (server, connections, plugins, groups, routing,
health, cost) and the embedded default fleet."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct, field

from gateway.protocol import Freshness
from gateway.settings.shared import TOP_KEYS

_STATE_KEYS = TOP_KEYS


EMBEDDED_DEFAULT: Mapping[str, Any] = {
    "backends": [
        {
            "id": "cpu",
            "type": "llamacpp",
            "model": "smollm2-135m",
            # Estimate from SmolLM2's training data; configurable like every cutoff.
            "knowledge_cutoff": "2024-06-01",
        },
        {
            # A simulated etched ASIC (Llama 3.1 8B in silicon); its text comes from the
            # CPU model, its timings and joules from the card's model.
            "id": "asic",
            "type": "asic-sim",
            "model": "llama-3.1-8b",
            "knowledge_cutoff": "2023-12-01",
            "twin": "cpu",
        },
    ],
    "groups": {"auto": ["asic", "cpu"]},
}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BACKEND_KEYS = {
    "id",
    "type",
    "model",
    "knowledge_cutoff",
    "profile",
    "adapters",
    "energy",
    "list_price",
    "default_output_tokens",
    "max_output_tokens",
    "capabilities",
}
_TOP_KEYS = {"backends", "groups", "server", "plugins", "prices", "cost", "routing", "health"}
_TOP_KEYS |= _STATE_KEYS


class ConnectionSettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``server.connections``: what one client connection may hold (README, Connection limits)."""

    max_header_bytes: int = 16 * 1024  # request line and headers together; 431 beyond
    max_header_line_bytes: int = 8 * 1024  # one header line (431) or the URL (414)
    header_timeout_s: float = 10.0  # connect (or a request's first byte) to its headers' end
    body_timeout_s: float = 30.0  # the longest pause between two reads of a request body
    keep_alive_s: float = 5.0  # an idle connection between requests is closed after this
    # Open connections per process; unset: min(1000, the open-file limit less 100).
    max_connections: int | None = None


class ResponseStoreSettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``server.responses``: how long and how many responses of ``POST /v1/responses`` are
    kept (for ``GET /v1/responses/{id}`` and ``previous_response_id``); the oldest go first."""

    ttl_days: Annotated[float, Meta(gt=0, le=3650)] = 30.0
    max_stored: Annotated[int, Meta(ge=1)] = 100_000


class ServerSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8400
    max_body_bytes: Annotated[int, Meta(ge=1)] = 4 * 1024 * 1024
    data_dir: str | None = None
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)
    # Accepted for old configs; no effect: the generation endpoints always take the edge
    # in front of Litestar (gateway/api/generation.py).
    fast_path: bool = True
    # Host names (``Host`` header) answered, against DNS rebinding: unset means localhost,
    # 127.0.0.1 and [::1] when bound to a loopback address, any otherwise; "*.example.com"
    # takes sub-domains, "*" any host.
    allowed_hosts: list[str] | None = None
    # Origins whose web pages may call the API (CORS); none unless listed ("*": any).
    cors_origins: list[str] = field(default_factory=list)
    # With auth on, /schema* needs the admin key unless this is true.
    open_schema: bool = False
    # On SIGTERM: requests in flight get this long to finish; then streams end with an
    # error event and [DONE], other requests with 503 + Retry-After (recorded "shutdown").
    shutdown_grace_s: Annotated[float, Meta(ge=0, le=3600)] = 10.0
    responses: ResponseStoreSettings = field(default_factory=ResponseStoreSettings)


class PluginSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    block: list[str] = field(default_factory=list)


class GroupPolicy(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How a group routes: the policy plugin, what its quotes count, its default need."""

    router: str = "cheapest-fresh"
    policy: Literal["full", "marginal"] = "full"
    freshness: Freshness | None = None


class RoutingSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    # Backends tried per request before giving up (retry budget); 0 would refuse them all.
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    default_output_tokens: Annotated[int, Meta(ge=1)] = 256  # expected output without max_tokens
    # A group that names a backend, and a request for a base model, also consider the
    # backend's LoRA adapter deployments (their own cutoffs); true: adapters only by name.
    adapters_by_name_only: bool = False


class HealthSettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``health:``, backend health after Envoy's outlier detection (gateway/state/health.py).

    A backend is ejected (its circuit opens) when, before their first byte, at least
    ``failure_rate`` of at least ``min_requests`` requests in the last ``window_s`` failed,
    or ``consecutive_failures`` in a row did; for ``ejection_s``, doubled with each
    ejection in a row up to ``max_ejection_s``; then ``half_open_requests`` requests at a
    time probe it (a success closes it). No more than ``max_ejection_percent`` of a group's
    backends are ejected at once (at least one); a request whose candidates are all
    unhealthy tries them anyway (panic mode).
    """

    failure_rate: Annotated[float, Meta(gt=0, le=1)] = 0.5
    min_requests: Annotated[int, Meta(ge=1)] = 10
    window_s: Annotated[float, Meta(gt=0)] = 10.0
    consecutive_failures: Annotated[int, Meta(ge=1)] = 5
    ejection_s: Annotated[float, Meta(gt=0)] = 5.0
    max_ejection_s: Annotated[float, Meta(gt=0)] = 30.0
    max_ejection_percent: Annotated[float, Meta(ge=0, le=100)] = 50.0
    half_open_requests: Annotated[int, Meta(ge=1)] = 1


class CostSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    # The cost model plugin to use; "energy" comes with freshet-energy.
    model: str = "energy"
