"""Backend health: one model per backend, after Envoy's outlier detection.

Limits and budgets are in :mod:`gateway.state.limits` / :mod:`gateway.state.limits_redis`;
the shared version of this model in :mod:`gateway.state.health_redis`.

What counts, and against what:

- A failure *before the first byte* (refused, timed out, 5xx, garbage: an error of status
  >= 500 from :meth:`Backend.stream` before its first chunk) is evidence about the backend.
  A refusal that is the client's (context too long, queue full: 4xx) is not.
- A failure *after* the first byte (a cut connection, a stall, a malformed event
  mid-stream) is evidence about that connection and that request, not that the server is
  gone: the client gets its error event and the record says so, but it is not counted for
  ejection. A server that is really gone fails its next requests before their first byte.
- A first chunk is a success.

When it is ejected (the circuit *opens*): at least ``failure_rate`` of at least
``min_requests`` requests in the last ``window_s`` failed, or ``consecutive_failures`` in a
row did. It stays out for ``ejection_s``, doubled for each ejection in a row (an ejection
after the circuit has been closed for ``max_ejection_s`` starts again at ``ejection_s``),
at most ``max_ejection_s``. Then it is *half-open*: real requests probe it,
``half_open_requests`` at a time; a success closes it, a failure ejects it again.

Never more than ``max_ejection_percent`` of a group's backends are ejected at once (at least
one may be, as in Envoy): an ejection that would pass the share is not made (``capped``).
A request whose candidates are all unhealthy is sent to them anyway (panic mode, decided by
the router and counted here) rather than refused.

The failure rate is measured by each process over its own requests; circuits (ejections,
consecutive failures, probe results) are shared through Redis when configured.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, Protocol

from msgspec import Struct

from gateway.settings import HealthSettings, Settings

CircuitState = Literal["closed", "open", "half_open"]
BUCKETS = 10  # the window is kept as this many slices


class Circuit(Struct, kw_only=True):
    """A backend's circuit: what is shared between processes."""

    failures: int = 0  # consecutive failures before the first byte
    state: CircuitState = "closed"
    opened_at: float = 0.0  # in this process's clock
    open_for_s: float = 0.0
    ejections: int = 0  # in all
    streak: int = 0  # ejections in a row: the next one lasts ejection_s * 2**streak
    closed_at: float = 0.0  # in this process's clock


class HealthView(Struct, kw_only=True):
    """One backend's health as ``/freshet/backends`` shows it."""

    state: CircuitState
    consecutive_failures: int
    ejections: int
    ejected_until: float | None  # Unix time, while open
    requests: int  # in the window, this process: successes and failures before the first byte
    failures: int
    failure_rate: float | None
    probes: int  # half-open requests in flight
    capped: int  # ejections not made because of the group's share
    panic: bool  # served in panic mode within the window
    panic_requests: int


class Window:
    """Outcomes of the last ``span_s`` seconds, in :data:`BUCKETS` slices."""

    __slots__ = ("_failed", "_ok", "_stamp", "_width")

    def __init__(self, span_s: float) -> None:
        self._width = span_s / BUCKETS
        self._ok = [0] * BUCKETS
        self._failed = [0] * BUCKETS
        self._stamp = [-BUCKETS] * BUCKETS

    def add(self, now: float, failed: bool) -> None:
        tick = int(now / self._width)
        slot = tick % BUCKETS
        if self._stamp[slot] != tick:
            self._stamp[slot] = tick
            self._ok[slot] = self._failed[slot] = 0
        if failed:
            self._failed[slot] += 1
        else:
            self._ok[slot] += 1

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, failures) in the window."""
        tick = int(now / self._width)
        requests = failures = 0
        for slot in range(BUCKETS):
            if tick - self._stamp[slot] < BUCKETS:
                requests += self._ok[slot] + self._failed[slot]
                failures += self._failed[slot]
        return requests, failures

    def clear(self) -> None:
        self._stamp = [-BUCKETS] * BUCKETS


class HealthState(Protocol):
    """What the router and the dispatcher ask and tell about backends' health."""

    def available(self, backend_id: str) -> bool:
        """The circuit is not open (half-open takes probes)."""
        ...

    def unavailable(self) -> frozenset[str]:
        """Backends a request should not be sent to now: ejected, or half-open with every
        probe out. Asked once per request (usually empty)."""
        ...

    def admit(self, backend_id: str) -> bool:
        """Before an attempt: True if it may go (a half-open backend takes it as a probe)."""
        ...

    def release(self, backend_id: str) -> None:
        """An admitted attempt ended with no verdict (refused by the client's fault, or
        cancelled): its probe, if it was one, is free again."""
        ...

    def success(self, backend_id: str) -> None:
        """A first chunk came."""
        ...

    def failure(self, backend_id: str) -> None:
        """The backend failed before its first chunk (status >= 500)."""
        ...

    def panic(self, group: str, backend_ids: Sequence[str]) -> None:
        """A request to ``group`` was sent to unhealthy backends: there was nothing else."""
        ...

    def circuit(self, backend_id: str) -> Circuit: ...

    def view(self, backend_id: str) -> HealthView: ...

    def known(self) -> Iterable[str]:
        """The backends it has a circuit for."""
        ...

    @property
    def panics(self) -> Mapping[str, int]:
        """Requests routed in panic mode, by group (this process)."""
        ...


def health_groups(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The sets of interchangeable backends: the config's groups, and backends that serve
    the same model."""
    groups = dict(settings.groups)
    by_model: dict[str, list[str]] = {}
    for backend in settings.backends:
        if backend.model:
            by_model.setdefault(backend.model, []).append(backend.id)
    for model, ids in by_model.items():
        groups.setdefault(f"model {model}", tuple(ids))
    return groups


def cap_groups(
    groups: Mapping[str, Sequence[str]], max_ejection_percent: float
) -> dict[str, list[tuple[int, tuple[str, ...]]]]:
    """For each backend, the groups of two or more it is in, with how many of each may be
    ejected at once (at least one)."""
    out: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    seen: set[tuple[str, ...]] = set()
    for members in groups.values():
        unique = tuple(dict.fromkeys(members))
        if len(unique) < 2 or unique in seen:
            continue
        seen.add(unique)
        limit = max(1, math.floor(len(unique) * max_ejection_percent / 100 + 1e-9))
        for member in unique:
            out.setdefault(member, []).append((limit, unique))
    return out


class LocalHealth:
    """The health model in this process (see the module's docstring).

    ``groups`` are the sets of interchangeable backends (the config's groups, and backends
    serving the same model) whose ejected share is capped.
    """

    def __init__(
        self,
        settings: HealthSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._settings = s = settings or HealthSettings()
        self._clock = clock
        self._circuits: dict[str, Circuit] = {}
        self._windows: dict[str, Window] = {}
        self._probes: Counter[str] = Counter()
        # Ids whose circuit was open or half-open when last looked at: the only ones
        # unavailable() has to look at (usually none).
        self._out: set[str] = set()
        self._caps = cap_groups(groups or {}, s.max_ejection_percent)
        self._capped: Counter[str] = Counter()
        self._panics: Counter[str] = Counter()
        self._panic_requests: Counter[str] = Counter()
        self._panic_at: dict[str, float] = {}

    @property
    def settings(self) -> HealthSettings:
        return self._settings

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def panics(self) -> Mapping[str, int]:
        return self._panics

    def circuit(self, backend_id: str) -> Circuit:
        circuit = self._circuits.get(backend_id)
        if circuit is None:
            circuit = self._circuits[backend_id] = Circuit()
        if circuit.state == "open" and self._clock() - circuit.opened_at >= circuit.open_for_s:
            circuit.state = "half_open"
            self._probes.pop(backend_id, None)
        return circuit

    def window(self, backend_id: str) -> Window:
        window = self._windows.get(backend_id)
        if window is None:
            window = self._windows[backend_id] = Window(self._settings.window_s)
        return window

    def available(self, backend_id: str) -> bool:
        return self.circuit(backend_id).state != "open"

    def _admissible(self, backend_id: str) -> bool:
        state = self.circuit(backend_id).state
        if state == "closed":
            self._out.discard(backend_id)
            return True
        if state == "open":
            return False
        return self._probes[backend_id] < self._settings.half_open_requests

    def unavailable(self) -> frozenset[str]:
        if not self._out:
            return frozenset()
        return frozenset(b for b in tuple(self._out) if not self._admissible(b))

    def admit(self, backend_id: str) -> bool:
        circuit = self.circuit(backend_id)
        if circuit.state == "closed":
            return True
        if circuit.state == "open" or not self._admissible(backend_id):
            return False
        self._probes[backend_id] += 1
        return True

    def release(self, backend_id: str) -> None:
        if self._probes[backend_id] > 0:
            self._probes[backend_id] -= 1

    def success(self, backend_id: str) -> None:
        self.window(backend_id).add(self._clock(), False)
        circuit = self.circuit(backend_id)
        circuit.failures = 0
        if circuit.state == "half_open":
            self._close(backend_id, circuit)

    def failure(self, backend_id: str) -> None:
        self.record_failure(backend_id)

    def record_failure(self, backend_id: str) -> bool:
        """Count a failure; True when the rules call for an ejection (made here unless the
        group's share forbids it)."""
        now = self._clock()
        self.window(backend_id).add(now, True)
        circuit = self.circuit(backend_id)
        circuit.failures += 1
        if circuit.state == "half_open":  # a probe failed
            self._open(backend_id, circuit, now)
            return True
        if circuit.state == "closed" and (
            circuit.failures >= self._settings.consecutive_failures
            or self.rate_exceeded(backend_id)
        ):
            if self.may_eject(backend_id):
                self._open(backend_id, circuit, now)
            else:
                self._capped[backend_id] += 1
            return True
        return False

    def rate_exceeded(self, backend_id: str) -> bool:
        """This process's failure rate over the window is at or over the threshold."""
        s = self._settings
        requests, failures = self.window(backend_id).counts(self._clock())
        return requests >= s.min_requests and failures >= s.failure_rate * requests

    def may_eject(self, backend_id: str) -> bool:
        """Ejecting it would keep every group it is in within its ejected share."""
        for limit, members in self._caps.get(backend_id, ()):
            ejected = sum(1 for m in members if m != backend_id and self.circuit(m).state == "open")
            if ejected + 1 > limit:
                return False
        return True

    def caps(self, backend_id: str) -> list[tuple[int, tuple[str, ...]]]:
        return self._caps.get(backend_id, [])

    def note_capped(self, backend_id: str) -> None:
        self._capped[backend_id] += 1

    def _open(self, backend_id: str, circuit: Circuit, now: float) -> None:
        s = self._settings
        if circuit.state == "closed" and now - circuit.closed_at >= s.max_ejection_s:
            circuit.streak = 0  # it had been well for long enough: start again
        circuit.open_for_s = min(s.max_ejection_s, s.ejection_s * 2**circuit.streak)
        circuit.streak += 1
        circuit.ejections += 1
        circuit.state = "open"
        circuit.opened_at = now
        self._probes.pop(backend_id, None)
        self._out.add(backend_id)
        # Counted afresh when it comes back: failures from before its ejection must not
        # eject it again on its first new one.
        self.window(backend_id).clear()

    def _close(self, backend_id: str, circuit: Circuit) -> None:
        circuit.state = "closed"
        circuit.failures = 0
        circuit.closed_at = self._clock()
        self._probes.pop(backend_id, None)
        self._out.discard(backend_id)

    def adopt(self, backend_id: str, circuit: Circuit) -> None:
        """Take a circuit's state from elsewhere (the shared store); times are in this
        process's clock."""
        before = self.circuit(backend_id).state if backend_id in self._circuits else None
        if circuit.state == "open" and self._clock() - circuit.opened_at >= circuit.open_for_s:
            circuit.state = "half_open"  # stored as open, its time is up
        if before != circuit.state:  # the same state again (every poll) keeps its probes
            self._probes.pop(backend_id, None)
            if circuit.state == "open":
                self.window(backend_id).clear()
        self._circuits[backend_id] = circuit
        if circuit.state == "closed":
            self._out.discard(backend_id)
        else:
            self._out.add(backend_id)

    def panic(self, group: str, backend_ids: Sequence[str]) -> None:
        now = self._clock()
        self._panics[group] += 1
        for backend_id in backend_ids:
            self._panic_requests[backend_id] += 1
            self._panic_at[backend_id] = now

    def view(self, backend_id: str) -> HealthView:
        now = self._clock()
        circuit = self.circuit(backend_id)
        requests, failures = self.window(backend_id).counts(now)
        until = None
        if circuit.state == "open":
            until = time.time() + circuit.opened_at + circuit.open_for_s - now
        panic_at = self._panic_at.get(backend_id)
        return HealthView(
            state=circuit.state,
            consecutive_failures=circuit.failures,
            ejections=circuit.ejections,
            ejected_until=until,
            requests=requests,
            failures=failures,
            failure_rate=failures / requests if requests else None,
            probes=self._probes[backend_id],
            capped=self._capped[backend_id],
            panic=panic_at is not None and now - panic_at < self._settings.window_s,
            panic_requests=self._panic_requests[backend_id],
        )

    def known(self) -> Iterable[str]:
        return tuple(self._circuits)
