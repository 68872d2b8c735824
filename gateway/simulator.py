"""How a backend type simulates itself, for ``freshet replay``: the contract and a queue model.

``freshet replay`` sends a trace through a fleet without serving anything: the router, the
cost model, the usage records and the reports are the live ones, and only the backends'
timing is simulated. Each backend type supplies that through ``register_simulators``: a
:data:`SimulatorFactory` makes one :class:`Simulator` for a configured backend, a
performance model on a simulated clock (seconds from the start of the replay).

The engine calls a simulator in time order: :meth:`Simulator.advance` to a request's
arrival (collecting what finished by then), :meth:`Simulator.status` for the router, then
:meth:`Simulator.submit` if the router chose it. ``submit`` refuses the way the live
backend refuses before its first byte, by raising the same error (a full queue:
:class:`~gateway.errors.RateLimited`; too long: :class:`~gateway.errors.ContextLengthExceeded`),
and the request falls back to the next candidate, as live.

What a finished request used is a :class:`~gateway.backend.BackendUsage` marked
``energy_source="simulated"``, built with :func:`simulated_usage` so that the cost model
reads its joules, their prefill/decode split and its busy seconds (the capex share).

:class:`ServerPool` is the model most backend types need: ``servers`` identical servers
(llama.cpp instances, a paid API's unbounded concurrency), a first-come-first-served queue
with a limit, and each request served alone in ``overhead + prompt/prefill + output/decode``
seconds.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec
from msgspec import Struct

from gateway.backend import Backend, BackendConfig, BackendStatus, BackendUsage, HardwareProfile
from gateway.errors import ContextLengthExceeded, RateLimited


# Made for every request of a replay and never part of a cycle: untracked by the collector.
class SimRequest(Struct, kw_only=True, frozen=True, gc=False):
    """One request handed to a simulator."""

    tag: int  # the engine's handle, returned in SimDone
    arrival_s: float  # simulated seconds from the start of the replay
    prompt_tokens: int
    output_tokens: int  # generated in full (the request's max_tokens is the same)
    adapter: str | None = None


class SimDone(Struct, kw_only=True, gc=False):
    """A request that finished: its end on the simulated clock and what it used."""

    tag: int
    end_s: float
    usage: BackendUsage  # time_to_first_token_s and duration_s count from its arrival


class SimTotals(Struct, kw_only=True):
    """What the hardware did from the start of the replay to a moment."""

    joules: float  # everything drawn, busy and idle
    idle_joules: float  # drawn while no request ran
    busy_s: float  # seconds of work, as whole-backend seconds (slot-seconds / slots)


class Simulator(Protocol):
    """A backend's performance model on a simulated clock (see the module's docstring)."""

    def submit(self, request: SimRequest) -> None:
        """Take ``request`` at ``request.arrival_s``, or refuse it by raising the error the
        live backend raises before its first byte."""

    def advance(self, until_s: float) -> Sequence[SimDone]:
        """Run the model up to ``until_s`` (never earlier than a previous call); the
        requests that finished by then, earliest end first."""
        ...

    def status(self, now_s: float) -> BackendStatus:
        """What the router sees at ``now_s`` (after :meth:`advance` to it)."""
        ...

    def totals(self, until_s: float) -> SimTotals:
        """Energy and busy time from the start to ``until_s`` (after every request ended)."""
        ...


@runtime_checkable
class Calibratable(Protocol):
    """A backend that can measure its own performance on this machine (``freshet
    calibrate``), so that a replay models it with measured figures, not guessed ones."""

    async def calibrate(self) -> Mapping[str, float]:
        """After :meth:`~gateway.backend.Backend.start`: this machine's figures for the
        backend, as ``profile:`` keys (``prefill_tokens_per_s``, ``decode_tokens_per_s``)
        the backend type's simulator reads; a second or so of work."""
        ...


SimulatorFactory = Callable[[Backend, BackendConfig, Mapping[str, Any]], Simulator]
"""``factory(backend, config, options)``: a simulator for one configured backend. ``backend``
is the real backend object built from ``config`` (its deployments, profile and parameters;
it is never started); ``options`` are the replay's settings for this backend
(``freshet replay --sim ID.KEY=VALUE``), which the factory validates (errors name the key)."""


def simulated_usage(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    ttft_s: float | None,
    duration_s: float,
    active_j: float,
    decode_j: float,
    idle_j: float,
    busy_s: float,
    queue_s: float = 0.0,
) -> BackendUsage:
    """A finished request's usage as the cost model reads a simulated backend's figures:
    ``energy_joules`` is its busy energy plus the idle energy it carries (the idle drawn
    since the previous request finished; charged only under ``prices.idle: attribute``),
    ``decode_j`` the part of ``active_j`` spent generating, ``busy_s`` its share of the
    hardware's busy seconds (the basis of its capex share)."""
    return BackendUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        time_to_first_token_s=ttft_s,
        duration_s=duration_s,
        energy_joules=active_j + idle_j,
        energy_source="simulated",
        timings={
            "queue_s": queue_s,
            "busy_s": busy_s,
            "energy_card_active_j": active_j,
            "energy_card_decode_j": decode_j,
            "energy_card_idle_j": idle_j,
        },
    )


def profile_watts(profile: HardwareProfile) -> Callable[[float], float]:
    """Watts with ``n`` requests running, as :class:`~gateway.backend.HardwareProfile`
    defines it: its ``power_curve`` (piecewise linear), else linear from ``watts_idle`` at
    none to ``watts_active`` at ``max_concurrency``."""
    points = list(profile.power_curve) or [
        (0.0, profile.watts_idle),
        (float(max(1, profile.max_concurrency)), profile.watts_active),
    ]
    if points[0][0] > 0:
        points.insert(0, (0.0, profile.watts_idle))
    pts = sorted((float(b), float(w)) for b, w in points)

    def watts(n: float) -> float:
        if n <= pts[0][0]:
            return pts[0][1]
        for (b0, w0), (b1, w1) in itertools.pairwise(pts):
            if n <= b1:
                return w0 + (w1 - w0) * (n - b0) / (b1 - b0)
        return pts[-1][1]

    return watts


class ServerPool:
    """``servers`` identical servers (``None``: as many as there are requests) behind one
    first-come-first-served queue of at most ``queue_limit`` waiting requests.

    A request occupies one server for ``overhead_s + prompt/prefill + output/decode``
    seconds; its first token comes one decode step after its prefill. The board draws
    ``watts(n)`` with ``n`` servers busy, shared equally by the ``n`` requests; with none
    busy it is idle energy. Start times follow Kiefer and Wolfowitz's recursion: with
    arrivals in order, each request takes the server that frees first.
    """

    def __init__(
        self,
        *,
        backend_id: str,
        servers: int | None,
        queue_limit: int | None,
        prefill_tokens_per_s: float,
        decode_tokens_per_s: float,
        watts: Callable[[float], float],
        overhead_s: float = 0.0,
        max_context: int | None = None,
    ) -> None:
        self._id = backend_id
        self._servers = servers
        self._queue_limit = queue_limit
        self._c_prefill = 1.0 / prefill_tokens_per_s if prefill_tokens_per_s > 0 else 0.0
        self._c_decode = 1.0 / decode_tokens_per_s if decode_tokens_per_s > 0 else 0.0
        self._overhead = overhead_s
        self._max_context = max_context
        self._watts = [watts(n) for n in range(servers + 1)] if servers is not None else None
        self._watts_at = watts
        self._free: list[float] = [0.0] * servers if servers is not None else []
        # (time, order, kind, tag): kind 0 = end, 1 = start (an end frees its server first)
        self._events: list[tuple[float, int, int, int]] = []
        self._order = itertools.count()
        self._info: dict[int, tuple[SimRequest, float, float, float]] = {}  # tag -> plan
        self._share: dict[int, tuple[float, float]] = {}  # tag -> (A, B) at its start
        self._t = 0.0
        self._n = 0  # running
        self._waiting = 0
        self._a = 0.0  # joules per running request, integrated
        self._b = 0.0  # busy seconds per running request, integrated
        self._joules = 0.0
        self._idle = 0.0
        self._idle_pending = 0.0  # idle joules not yet carried by a finished request
        self._busy = 0.0

    def _power(self, n: int) -> float:
        return self._watts[n] if self._watts is not None else self._watts_at(n)

    def _integrate(self, until: float) -> None:
        dt = until - self._t
        if dt <= 0:
            return
        n = self._n
        p = self._power(n)
        self._joules += p * dt
        if n:
            self._a += p * dt / n
            self._b += dt / n
            self._busy += dt * (n / self._servers if self._servers else 1.0)
        else:
            self._idle += p * dt
            self._idle_pending += p * dt
        self._t = until

    def submit(self, request: SimRequest) -> None:
        prompt, output = request.prompt_tokens, request.output_tokens
        if self._max_context is not None and prompt + output > self._max_context:
            raise ContextLengthExceeded(
                f"the prompt ({prompt} tokens) plus max_tokens ({output}) exceeds the "
                f"{self._max_context}-token context of {self._id}",
                param="messages",
            )
        arrival = request.arrival_s
        prefill = self._overhead + prompt * self._c_prefill
        service = prefill + output * self._c_decode
        if self._servers is None:
            start = arrival
        else:
            start = max(arrival, self._free[0])
            limit = self._queue_limit
            if start > arrival and limit is not None and self._waiting >= limit:
                raise RateLimited(
                    f"{self._id}: every server is busy and {self._waiting} requests wait"
                )
            heapq.heapreplace(self._free, start + service)
        tag = request.tag
        self._info[tag] = (request, start, prefill, service)
        end = start + service
        if start <= self._t:  # starts now: the engine has advanced to the arrival
            self._start(tag)
        else:
            self._waiting += 1
            heapq.heappush(self._events, (start, next(self._order), 1, tag))
        heapq.heappush(self._events, (end, next(self._order), 0, tag))

    def _start(self, tag: int) -> None:
        self._n += 1
        self._share[tag] = (self._a, self._b)

    def advance(self, until_s: float) -> list[SimDone]:
        done: list[SimDone] = []
        events = self._events
        while events and events[0][0] <= until_s:
            at, _, kind, tag = heapq.heappop(events)
            self._integrate(at)
            if kind == 1:
                self._waiting -= 1
                self._start(tag)
                continue
            self._n -= 1
            done.append(self._finish(tag, at))
        if until_s != math.inf:
            self._integrate(until_s)
        return done

    def _finish(self, tag: int, at: float) -> SimDone:
        request, start, prefill, service = self._info.pop(tag)
        a0, b0 = self._share.pop(tag)
        active = self._a - a0
        idle, self._idle_pending = self._idle_pending, 0.0
        decode_s = service - prefill
        output = request.output_tokens
        arrival = request.arrival_s
        ttft = start + prefill + self._c_decode - arrival if output else None
        usage = simulated_usage(
            prompt_tokens=request.prompt_tokens,
            completion_tokens=output,
            ttft_s=ttft,
            duration_s=at - arrival,
            active_j=active,
            decode_j=active * decode_s / service if service > 0 else 0.0,
            idle_j=idle,
            busy_s=self._b - b0,
            queue_s=start - arrival,
        )
        return SimDone(tag=tag, end_s=at, usage=usage)

    def status(self, now_s: float) -> BackendStatus:
        servers = self._servers
        saturated = (
            servers is not None
            and self._queue_limit is not None
            and self._n >= servers
            and self._waiting >= self._queue_limit
        )
        return BackendStatus(
            healthy=True, running=self._n, waiting=self._waiting, saturated=saturated
        )

    def totals(self, until_s: float) -> SimTotals:
        self._integrate(until_s)
        return SimTotals(joules=self._joules, idle_joules=self._idle, busy_s=self._busy)


class PooledSimulator:
    """A :class:`Simulator` whose backend serves from a :class:`ServerPool`: subclasses
    set ``self._pool`` (and may shape each request in :meth:`submit`)."""

    _pool: ServerPool

    def submit(self, request: SimRequest) -> None:
        self._pool.submit(request)

    def advance(self, until_s: float) -> list[SimDone]:
        return self._pool.advance(until_s)

    def status(self, now_s: float) -> BackendStatus:
        return self._pool.status(now_s)

    def totals(self, until_s: float) -> SimTotals:
        return self._pool.totals(until_s)


def with_output(request: SimRequest, output_tokens: int) -> SimRequest:
    """``request`` producing ``output_tokens`` instead (a backend's cap, or its context)."""
    if output_tokens == request.output_tokens:
        return request
    return msgspec.structs.replace(request, output_tokens=output_tokens)
