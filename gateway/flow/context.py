"""What the flow knows about one request while it is handled."""

from __future__ import annotations

from msgspec import Struct

from gateway.flow.observer import NO_OBSERVER, RequestObserver
from gateway.protocol import Freshness
from gateway.state.keys import ApiKey
from gateway.state.limits import Reservation


class RequestContext(Struct, kw_only=True):
    """What the record needs to know about the request, gathered as it is handled."""

    request_id: str
    arrived: float
    requested_model: str
    group: str | None
    operation: str
    stream: bool
    key: str | None = None  # the API key's name
    api_key: ApiKey | None = None
    reservation: Reservation | None = None  # what the key's limits hold for it
    # What routing needs from the request (not recorded), parsed and checked at the edge:
    # the freshness need of the body and of the headers, and the TTFT limit (body first).
    freshness: Freshness | None = None
    header_freshness: Freshness | None = None
    max_ttft_ms: float | None = None
    observer: RequestObserver = NO_OBSERVER
