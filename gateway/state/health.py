"""Shared mutable state behind small interfaces: backend health (circuit breakers).

Limits and budgets are in :mod:`gateway.state.limits` /
:mod:`gateway.state.limits_redis`; the shared breakers in :mod:`gateway.state.health_redis`.

The embedded default keeps it in-process; a shared store implements the same methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

from msgspec import Struct

CircuitState = Literal["closed", "open", "half_open"]


class BreakerSettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    failures_to_open: int = 3
    open_for_s: float = 5.0
    max_open_for_s: float = 60.0


class Circuit(Struct, kw_only=True):
    failures: int = 0
    state: CircuitState = "closed"
    opened_at: float = 0.0
    open_for_s: float = 0.0


class HealthState(Protocol):
    def available(self, backend_id: str) -> bool: ...

    def unavailable(self) -> frozenset[str]: ...

    def success(self, backend_id: str) -> None: ...

    def failure(self, backend_id: str) -> None: ...

    def circuit(self, backend_id: str) -> Circuit: ...


class LocalHealth:
    """Per-backend circuit breakers: consecutive failures open a circuit; after
    ``open_for_s`` it is half-open and requests go through again as probes; a success
    closes it, a failure opens it again for twice as long (up to ``max_open_for_s``)."""

    def __init__(
        self, settings: BreakerSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings or BreakerSettings()
        self._clock = clock
        self._circuits: dict[str, Circuit] = {}
        self._open: set[str] = set()  # ids whose circuit was open when last looked at

    def circuit(self, backend_id: str) -> Circuit:
        circuit = self._circuits.get(backend_id)
        if circuit is None:
            circuit = self._circuits[backend_id] = Circuit()
        if circuit.state == "open" and self._clock() - circuit.opened_at >= circuit.open_for_s:
            circuit.state = "half_open"
            self._open.discard(backend_id)
        return circuit

    def available(self, backend_id: str) -> bool:
        return self.circuit(backend_id).state != "open"

    def unavailable(self) -> frozenset[str]:
        """The backends whose circuit is open now: the router asks once per request
        instead of once per candidate (usually none, so this costs nothing)."""
        if not self._open:
            return frozenset()
        return frozenset(b for b in tuple(self._open) if self.circuit(b).state == "open")

    def adopt(self, backend_id: str, circuit: Circuit) -> None:
        """Take a circuit's state from elsewhere (the shared store); ``opened_at`` is in
        this breaker's clock."""
        self._circuits[backend_id] = circuit
        if circuit.state == "open":
            self._open.add(backend_id)
        else:
            self._open.discard(backend_id)

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def success(self, backend_id: str) -> None:
        circuit = self.circuit(backend_id)
        circuit.failures = 0
        circuit.state = "closed"
        circuit.open_for_s = 0.0
        self._open.discard(backend_id)

    def failure(self, backend_id: str) -> None:
        s = self._settings
        circuit = self.circuit(backend_id)
        circuit.failures += 1
        if circuit.state == "half_open" or circuit.failures >= s.failures_to_open:
            circuit.open_for_s = min(
                s.max_open_for_s, circuit.open_for_s * 2 if circuit.open_for_s else s.open_for_s
            )
            circuit.state = "open"
            circuit.opened_at = self._clock()
            self._open.add(backend_id)
