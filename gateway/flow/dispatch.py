"""Send a request to its candidates in order until one produces a first chunk.

Failure before the first chunk falls through to the next candidate, so the client never
notices; what happened to each candidate is kept for the route explanation.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeAlias

import msgspec
from msgspec import Struct

from gateway.backend import Backend, Chunk, Deployment, GenerationRequest
from gateway.cost import Metering
from gateway.errors import BackendError, BackendUnavailable, FreshetError
from gateway.flow.fleet import Fleet
from gateway.outcome import Attempt
from gateway.state.health import HealthState

log = logging.getLogger(__name__)

Call: TypeAlias = Callable[[Backend, GenerationRequest], AsyncIterator[Chunk]]
"""How a candidate is asked to serve a request routed to it: :meth:`Backend.stream` for a
generation; one chunk with the usage for a request that is not a stream of tokens
(embeddings, see :meth:`gateway.flow.service.Service.embed`)."""


def stream(backend: Backend, request: GenerationRequest) -> AsyncIterator[Chunk]:
    return backend.stream(request)


class Opened(Struct, kw_only=True):
    """A backend stream that has produced its first chunk."""

    deployment: Deployment
    backend: Backend
    first: Chunk
    rest: AsyncIterator[Chunk]
    attempts: list[Attempt]
    metering: Metering | None = None


async def open_stream(
    fleet: Fleet,
    candidates: Sequence[Deployment],
    request: GenerationRequest,
    begin: Callable[[Deployment], Metering] | None = None,
    attempts: list[Attempt] | None = None,
    health: HealthState | None = None,
    call: Call = stream,
    *,
    whole: bool = False,
) -> Opened:
    """Try ``candidates`` in order; ``attempts`` (if given) is filled with each failure;
    ``call`` asks each (by default, its :meth:`Backend.stream`); ``whole``: the client
    takes the answer in one piece (:attr:`GenerationRequest.whole`).

    ``begin`` opens the metering of an attempt before the backend is called, so the
    prefill's energy is part of it; a failed attempt's metering is closed unused.

    ``health`` says whether each may be tried now (a half-open backend takes a limited
    number of probes) and hears how each attempt went. Candidates it holds back are tried
    last, if nothing else served: when it holds back every one, that is panic mode (every
    candidate is unhealthy, so they are tried anyway rather than refused).
    """
    attempts = [] if attempts is None else attempts
    failures: list[FreshetError] = []
    held: list[Deployment] = []
    for dep in candidates:
        if health is not None and not health.admit(dep.backend_id):
            held.append(dep)
            continue
        opened = await _attempt(
            fleet, dep, request, begin, attempts, failures, health, True, call, whole
        )
        if opened is not None:
            return opened
    if held and health is not None and len(held) == len(candidates):
        health.panic(request.model, [d.backend_id for d in held])
    for dep in held:
        opened = await _attempt(
            fleet, dep, request, begin, attempts, failures, health, False, call, whole
        )
        if opened is not None:
            return opened
    raise _final_error(failures, attempts)


async def _attempt(
    fleet: Fleet,
    dep: Deployment,
    request: GenerationRequest,
    begin: Callable[[Deployment], Metering] | None,
    attempts: list[Attempt],
    failures: list[FreshetError],
    health: HealthState | None,
    admitted: bool,
    call: Call = stream,
    whole: bool = False,
) -> Opened | None:
    """One candidate: its opened stream, or None with its failure noted."""
    backend = fleet.get(dep.backend_id)
    routed = msgspec.structs.replace(request, model=dep.model, adapter=dep.adapter, whole=whole)
    metering = begin(dep) if begin is not None else None
    chunks = call(backend, routed)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        error: FreshetError = BackendError(f"backend {dep.backend_id} returned no output")
    except FreshetError as exc:
        error = exc
    except Exception as exc:
        # A plugin bug or a crashed engine: logged with its traceback, then treated as
        # a backend failure so the next candidate can still serve the request.
        log.exception("backend %s failed before its first chunk", dep.backend_id)
        error = BackendError(f"backend {dep.backend_id} failed: {type(exc).__name__}")
    except BaseException:
        # Cancelled while waiting (shutdown): release the backend and the metering.
        if health is not None and admitted:
            health.release(dep.backend_id)
        await aclose(chunks)
        if metering is not None:
            metering.end(None)
        raise
    else:
        if health is not None:
            health.success(dep.backend_id)
        return Opened(
            deployment=dep,
            backend=backend,
            first=first,
            rest=chunks,
            attempts=attempts,
            metering=metering,
        )
    await aclose(chunks)
    if metering is not None:
        metering.end(None)
    if health is not None:
        if error.status >= 500:
            health.failure(dep.backend_id)
        elif admitted:
            health.release(dep.backend_id)  # refusals (context, queue full) are not faults
    attempts.append(Attempt(backend_id=dep.backend_id, error=error.message, status=error.status))
    failures.append(error)
    return None


def _final_error(failures: list[FreshetError], attempts: list[Attempt]) -> FreshetError:
    if failures and all(400 <= f.status < 500 for f in failures):
        # Every candidate refused for a client-side reason (context too long, queue full):
        # the first refusal is the most relevant one to report.
        return failures[0]
    if not attempts:
        return BackendUnavailable("no backend could serve the request (no candidates)")
    # Backends were tried and failed: a bad gateway (502), as nginx answers when its
    # upstreams fail. 503 stays the gateway's own refusal (nothing it could try).
    reasons = "; ".join(f"{a.backend_id}: {a.error}" for a in attempts)
    return BackendError(f"no backend could serve the request ({reasons})")


async def aclose(stream: AsyncIterator[object]) -> None:
    """Close a backend stream: async generators stop their work in ``finally`` blocks."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
