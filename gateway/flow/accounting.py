"""Turning a finished request into its costing and its one usage record."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec
from msgspec import Struct

from gateway.backend import Backend, BackendUsage, Deployment
from gateway.cost import BackendCost, Costing, CostModel, ListPriceOnly, Metering, Quote
from gateway.errors import ConfigError
from gateway.flow.admission import Admission
from gateway.flow.context import RequestContext
from gateway.ledger.sqlite import Ledger
from gateway.outcome import Attempt, AttemptUsage, Outcome, Status, UsageRecord
from gateway.plugins import Plugins
from gateway.settings import Settings
from gateway.state.quotes import QuoteCalibration, calibrated

log = logging.getLogger(__name__)


def build_cost_model(settings: Settings, plugins: Plugins) -> CostModel:
    models = plugins.cost_models()
    factory = models.get(settings.cost.model)
    if factory is None:
        if models or settings.cost.model != "energy":
            raise ConfigError(
                f"unknown cost model {settings.cost.model!r} "
                f"(installed: {sorted(models) or 'none'})",
                file=settings.config_file,
                key="cost.model",
            )
        log.warning("no cost plugin installed (freshet-energy): recording list prices only")
        return ListPriceOnly(settings.prices)
    model: CostModel = factory(settings.prices, plugins.energy_meters())
    return model


class Accounting:
    def __init__(
        self,
        model: CostModel,
        backends: Mapping[str, Backend],
        settings: Settings,
        ledger: Ledger,
        plugins: Plugins,
        admission: Admission | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._costs: dict[str, BackendCost] = {
            config.id: model.for_backend(backends[config.id], config)
            for config in settings.backends
        }
        # What the router quotes with: the same costs, their times corrected by what this
        # process saw happen (gateway.state.quotes).
        self.calibration = QuoteCalibration()
        self._quotes = calibrated(self._costs, self.calibration)
        self._ledger = ledger
        self._plugins = plugins
        self._admission = admission
        self._hooks: set[asyncio.Task[None]] = set()
        # True once the gateway's shutdown grace is over: requests it cancels then were
        # ended by the gateway, not their clients.
        self._stopping = stopping

    def cost(self, backend_id: str) -> BackendCost:
        return self._costs[backend_id]

    @property
    def costs(self) -> Mapping[str, BackendCost]:
        """Every backend's cost, by id, as its cost model made it."""
        return self._costs

    @property
    def quotes(self) -> Mapping[str, BackendCost]:
        """Every backend's cost with the learned correction of its quoted times, by id
        (the router looks each candidate up here)."""
        return self._quotes

    def begin(self, backend_id: str, request_id: str, prompt_tokens: int) -> Metering:
        return self._costs[backend_id].begin(request_id, prompt_tokens)

    def end_attempt(self, outcome: Outcome, at: float | None = None) -> Costing:
        """Close an attempt's metering: what that backend's work cost."""
        if outcome.metering is None:
            return Costing(joules=None, energy_source=None)
        return outcome.metering.end(outcome.usage, time.time() if at is None else at)

    def finish(
        self,
        ctx: RequestContext,
        deployment: Deployment,
        backend_kind: str,
        outcome: Outcome,
        fallbacks: int,
        failed: Sequence[FailedAttempt] = (),
        refused: Sequence[Attempt] = (),
        served: Costing | None = None,
    ) -> Costing:
        """Meter, record, and tell plugins; returns the costing for the response.

        ``failed``: earlier attempts of this request that failed after their first chunk
        (metered and closed); ``refused``: backends that failed before their first chunk.
        The one record carries them all in ``attempts`` and counts their joules and
        dollars in its totals. ``served``: the attempt's costing when it is closed already.
        """
        now = time.time()
        if served is None:
            served = self.end_attempt(outcome, now)
        costing = _sum([f.costing for f in failed], served) if failed else served
        tokens = outcome.tokens()
        status = _status(outcome, self._stopping)
        attempts = (
            _attempts(failed, refused, deployment, outcome, served, status)
            if failed or refused
            else None
        )
        record = usage_record(
            request_id=ctx.request_id,
            arrived=ctx.arrived,
            key=ctx.key,
            group=ctx.group,
            requested_model=ctx.requested_model,
            operation=ctx.operation,
            stream=ctx.stream,
            deployment=deployment,
            backend_kind=backend_kind,
            status=status,
            error_code=outcome.error.code if outcome.error is not None else None,
            # Without the backend's final usage (client gone, failure): the prompt as the
            # backend counted it (else the estimate), and the chunks that were sent.
            tokens=tokens,
            ttft_s=outcome.ttft_s,
            duration_s=now - ctx.arrived,
            costing=costing,
            fallbacks=fallbacks,
            attempts=attempts,
            usage=outcome.usage,
            quote=outcome.quote,
        )
        if outcome.quote is not None and status == "ok" and not fallbacks:
            # Only a request that went as planned says how good its quote was.
            self.calibration.observe(
                deployment.backend_id, outcome.quote, record.ttft_s, record.duration_s
            )
        if self._admission is not None:  # settle the key's reservation with the real cost
            self._admission.settle(ctx, costing, record.prompt_tokens + record.completion_tokens)
        self._ledger.record(record)
        ctx.observer.recorded(record, outcome)
        if self._plugins.wants_usage():
            task = asyncio.create_task(self._plugins.usage_recorded(record))
            self._hooks.add(task)
            task.add_done_callback(self._hooks.discard)
        return costing


def usage_record(
    *,
    request_id: str,
    arrived: float,
    key: str | None,
    group: str | None,
    requested_model: str,
    operation: str,
    stream: bool,
    deployment: Deployment,
    backend_kind: str,
    status: Status,
    error_code: str | None,
    tokens: tuple[int, int],
    ttft_s: float | None,
    duration_s: float,
    costing: Costing,
    fallbacks: int = 0,
    attempts: str | None = None,
    usage: BackendUsage | None = None,
    quote: Quote | None = None,
) -> UsageRecord:
    """The one usage record of a request that reached a backend: what the request was, the
    deployment that served it (or was tried last), its tokens, times and costing. Live
    requests (:meth:`Accounting.finish`) and replayed ones (``freshet replay``) both make
    their records here, so the two cannot disagree on a field."""
    return UsageRecord(
        request_id=request_id,
        ts=arrived,
        key=key,
        group=group,
        requested_model=requested_model,
        backend=deployment.backend_id,
        backend_kind=backend_kind,
        model=deployment.model,
        adapter=deployment.adapter,
        knowledge_cutoff=(
            deployment.knowledge_cutoff.isoformat() if deployment.knowledge_cutoff else None
        ),
        operation=operation,
        stream=stream,
        status=status,
        error_code=error_code,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        ttft_s=ttft_s,
        duration_s=duration_s,
        joules=costing.joules,
        energy_source=costing.energy_source,
        joules_input=costing.joules_input,
        joules_output=costing.joules_output,
        usd_energy=costing.usd_energy,
        usd_capex=costing.usd_capex,
        usd_list=costing.usd_list,
        usd_input=costing.usd_input,
        usd_output=costing.usd_output,
        usd_total=costing.usd_total,
        fallbacks=fallbacks,
        attempts=attempts,
        # The parts of the tokens the backend reported (cache, reasoning): 0 without usage.
        cached_prompt_tokens=usage.cached_prompt_tokens if usage is not None else 0,
        cache_write_tokens=usage.cache_write_tokens if usage is not None else 0,
        reasoning_tokens=usage.reasoning_tokens if usage is not None else 0,
        # What the router expected of the deployment that served, beside what happened.
        quoted_ttft_s=quote.ttft_s if quote is not None else None,
        quoted_duration_s=quote.duration_s if quote is not None else None,
        quoted_joules=quote.joules if quote is not None else None,
        quoted_usd=quote.usd_total if quote is not None else None,
    )


class FailedAttempt(Struct, kw_only=True):
    """An attempt that failed after its first chunk, on a request that went on to another
    backend (non-streaming: the client had received nothing yet)."""

    deployment: Deployment
    outcome: Outcome
    costing: Costing


def _status(outcome: Outcome, stopping: Callable[[], bool]) -> Status:
    if outcome.shutdown:
        return "shutdown"
    if outcome.client_disconnected:
        return "shutdown" if stopping() else "client_disconnected"
    if outcome.error is not None:
        return "error"
    return "ok"


def _sum(failed: Sequence[Costing], served: Costing) -> Costing:
    total = msgspec.structs.replace(served)
    for c in failed:
        if c.joules is not None:
            total.joules = (total.joules or 0.0) + c.joules
        total.joules_input += c.joules_input
        total.joules_output += c.joules_output
        total.busy_s += c.busy_s
        total.usd_energy += c.usd_energy
        total.usd_capex += c.usd_capex
        total.usd_list += c.usd_list
        total.usd_input += c.usd_input
        total.usd_output += c.usd_output
    return total


def _attempts(
    failed: Sequence[FailedAttempt],
    refused: Sequence[Attempt],
    deployment: Deployment,
    outcome: Outcome,
    served: Costing,
    status: Status,
) -> str:
    rows = [
        AttemptUsage(backend=a.backend_id, status="error", error_code=str(a.status))
        for a in refused
    ]
    for f in failed:
        prompt, completion = f.outcome.tokens()
        error = f.outcome.error
        rows.append(
            AttemptUsage(
                backend=f.deployment.backend_id,
                status="error",
                error_code=(error.code or error.type) if error is not None else None,
                prompt_tokens=prompt,
                completion_tokens=completion,
                joules=f.costing.joules,
                usd_total=f.costing.usd_total,
            )
        )
    prompt, completion = outcome.tokens()
    error = outcome.error
    rows.append(
        AttemptUsage(
            backend=deployment.backend_id,
            status=status,
            error_code=(error.code or error.type) if error is not None else None,
            prompt_tokens=prompt,
            completion_tokens=completion,
            joules=served.joules,
            usd_total=served.usd_total,
        )
    )
    return msgspec.json.encode(rows).decode()
