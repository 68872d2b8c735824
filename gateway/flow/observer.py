"""What the flow tells whoever watches a request (telemetry implements it).

The flow calls these in order for one request: :meth:`~RequestObserver.requested` once,
then for each routing (a non-streaming request that falls back routes again)
:meth:`~RequestObserver.routing` and :meth:`~RequestObserver.routed`, then
:meth:`~RequestObserver.attempting` before each backend is called,
:meth:`~RequestObserver.answered` when a backend's first chunk is in, and
:meth:`~RequestObserver.recorded` with the request's usage record. Each call is cheap:
an observer notes references and timestamps and does its work after the response.
"""

from __future__ import annotations

from typing import Protocol

from gateway.backend import Deployment, GenerationRequest
from gateway.outcome import Attempt, Outcome, UsageRecord
from gateway.routing import Decision


class RequestObserver(Protocol):
    def requested(self, model: str) -> None:
        """The request names ``model`` (before it is resolved: a 404 still shows it)."""

    def routing(self, request: GenerationRequest) -> None:
        """The router starts deciding where ``request`` goes."""

    def routed(self, decision: Decision | None, error: BaseException | None) -> None:
        """The router has decided (``decision``), or failed (``error``)."""

    def attempting(self, deployment: Deployment, attempts: list[Attempt]) -> None:
        """``deployment``'s backend is about to be called; ``attempts`` holds the failures
        of this dispatch so far (and grows when this one fails before its first byte)."""

    def answered(self) -> None:
        """A backend's first chunk is in."""

    def recorded(self, record: UsageRecord, outcome: Outcome) -> None:
        """The request's one usage record is made, from ``outcome``."""


class NoObserver:
    """For requests nobody watches (the route dry run, tests)."""

    __slots__ = ()

    def requested(self, model: str) -> None:
        pass

    def routing(self, request: GenerationRequest) -> None:
        pass

    def routed(self, decision: Decision | None, error: BaseException | None) -> None:
        pass

    def attempting(self, deployment: Deployment, attempts: list[Attempt]) -> None:
        pass

    def answered(self) -> None:
        pass

    def recorded(self, record: UsageRecord, outcome: Outcome) -> None:
        pass


NO_OBSERVER = NoObserver()
