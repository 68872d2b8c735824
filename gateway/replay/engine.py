"""The discrete-event engine: one fleet, one pass over a trace, on a simulated clock.

What is live code and what is simulated:

- the fleet is built by the live :class:`~gateway.flow.fleet.Fleet` from the same config
  (the backend objects, never started, give their deployments and profiles), and names
  resolve through its :class:`~gateway.flow.fleet.Catalog`;
- each request's freshness need is :func:`~gateway.flow.freshness.resolve_need` on its
  simulated date; the route is :func:`~gateway.flow.decision.decide` with the group's
  policy and router plugin, over the cost model's quotes (the configured cost plugin, with
  every backend's joules taken from its simulator: ``energy.meter: simulated``);
- the candidates are tried in order as :func:`~gateway.flow.dispatch.open_stream` does, up
  to ``routing.max_attempts``, each opening the cost model's metering first; a simulator
  that refuses (queue full, too long) makes the request fall back, as live;
- a finished request is metered by the cost model (``Metering.end`` at its simulated end,
  so tariffs apply by the simulated hour) and becomes one usage record in a ledger, made
  by :func:`~gateway.flow.accounting.usage_record`, the function
  :meth:`~gateway.flow.accounting.Accounting.finish` makes live records with;
- only the backends' timing, queueing and energy are simulated: the backend type's
  simulator (``register_simulators``).

Nothing is kept per request once it has finished: requests in flight are the only state
that grows, and they are bounded by the fleet's queues.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from gateway.backend import Backend, BackendConfig, Deployment, HardwareProfile
from gateway.cost import BackendCost, Costing, CostModel, Metering, Quote, RequestShape
from gateway.errors import (
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    FreshetError,
    FreshnessUnsatisfiable,
    ModelNotFound,
    RateLimited,
)
from gateway.flow.accounting import build_cost_model, usage_record
from gateway.flow.decision import decide
from gateway.flow.fleet import Entry, Fleet
from gateway.flow.freshness import resolve_need
from gateway.ledger.sqlite import Ledger
from gateway.outcome import AttemptUsage, UsageRecord
from gateway.plugins import Plugins
from gateway.replay.stats import ClassStats, RunStats
from gateway.replay.traces import TraceError, TraceRequest
from gateway.routing import Decision, Need, Router
from gateway.settings import GroupPolicy, Settings
from gateway.simulator import SimDone, SimRequest, SimTotals, Simulator
from gateway.state.quotes import QuoteCalibration, calibrated

DEFAULT_POLICY = GroupPolicy()  # as the live flow: a group without a policy of its own
FLUSH_EVERY = 16_384  # records queued before the ledger writes them
PROGRESS_EVERY = 4096

Progress = Callable[[int], None]


def replay_settings(settings: Settings) -> Settings:
    """The fleet's settings with every backend metered by its simulator's joules."""
    backends = tuple(
        msgspec.structs.replace(c, energy={**c.energy, "meter": "simulated"})
        for c in settings.backends
    )
    return msgspec.structs.replace(settings, backends=backends)


class BackendResult(msgspec.Struct, kw_only=True):
    """What the fleet's planner needs of a backend after a run."""

    id: str
    type: str
    kind: str
    profile: HardwareProfile
    totals: SimTotals


class RunResult(msgspec.Struct, kw_only=True):
    stats: Any  # RunStats (plain counters)
    backends: list[BackendResult]
    t0: float  # unix time of simulated second 0
    kwh_usd: float  # the flat electricity price, for energy no request was charged
    pue: float


class _InFlight:
    __slots__ = (
        "arrival", "attempts", "cls", "deployment", "group", "metering", "quote", "request",
    )  # fmt: skip

    def __init__(
        self,
        request: TraceRequest,
        arrival: float,
        deployment: Deployment,
        metering: Metering,
        attempts: list[tuple[str, FreshetError]],
        cls: ClassStats,
        group: str | None,
        quote: Quote | None,
    ) -> None:
        self.request = request
        self.arrival = arrival
        self.deployment = deployment
        self.metering = metering
        self.attempts = attempts
        self.cls = cls
        self.group = group
        self.quote = quote


class Engine:
    """One fleet built from ``settings``, ready to replay one trace."""

    def __init__(
        self,
        settings: Settings,
        plugins: Plugins,
        sim_options: Mapping[str, Mapping[str, Any]] | None = None,
        default_model: str | None = None,
    ) -> None:
        sim_options = sim_options or {}
        self.settings = settings = replay_settings(settings)
        unknown = set(sim_options) - {c.id for c in settings.backends}
        if unknown:
            raise ConfigError(
                f"--sim names backend {sorted(unknown)[0]!r}, which the fleet does not have "
                f"(it has {', '.join(c.id for c in settings.backends)})",
                file=settings.config_file,
            )
        self.fleet = Fleet(settings, plugins)
        self.catalog = self.fleet.catalog
        self.model: CostModel = build_cost_model(settings, plugins)
        backends: Mapping[str, Backend] = self.fleet.backends
        self.costs: dict[str, BackendCost] = {
            c.id: self.model.for_backend(backends[c.id], c) for c in settings.backends
        }
        factories = plugins.simulators()
        self.sims: dict[str, Simulator] = {}
        for config in settings.backends:
            factory = factories.get(config.type)
            if factory is None:
                raise ConfigError(
                    f"backend type {config.type!r} has no simulator, so freshet replay cannot "
                    f"model it (types with one: {', '.join(sorted(factories)) or 'none'}); its "
                    "plugin would register one with the register_simulators hook",
                    file=settings.config_file,
                    key=f"backends[{config.index}].type",
                )
            self.sims[config.id] = factory(
                backends[config.id], config, sim_options.get(config.id, {})
            )
        self.kinds = {bid: b.kind for bid, b in backends.items()}
        routers = plugins.routers()
        self.routers: dict[str, Router] = {name: factory() for name, factory in routers.items()}
        for group, policy in settings.group_policies.items():
            if policy.router not in routers:
                raise ConfigError(
                    f"unknown router {policy.router!r} (installed: {sorted(routers)})",
                    file=settings.config_file,
                    key=f"groups.{group}.router",
                )
        self.default_model = default_model or _default_model(self.catalog.entries())
        self.max_attempts = settings.routing.max_attempts

    def configs(self) -> Mapping[str, BackendConfig]:
        return {c.id: c for c in self.settings.backends}

    async def run(
        self,
        requests: Iterable[TraceRequest],
        ledger: Ledger,
        *,
        id_prefix: str = "",
        progress: Progress | None = None,
        max_ttft_ms: float | None = None,
    ) -> RunResult:
        stats = RunStats(self.sims)
        sims = self.sims
        sim_items = list(sims.items())
        costs = self.costs
        # As live (Accounting): the router quotes with each backend's learned correction,
        # fitted to the requests that went as planned, from this run's start, on the
        # simulated clock (a backend idle for a simulated minute is quoted afresh).
        now = 0.0
        calibration = QuoteCalibration(clock=lambda: now)
        quotes = calibrated(costs, calibration)
        kinds = self.kinds
        record = ledger.record
        entries: dict[str, tuple[Entry, GroupPolicy, Router, list[str]]] = {}
        needs: dict[tuple[Any, ...], Need] = {}
        in_flight: dict[int, _InFlight] = {}
        t0: float | None = None
        day0 = 0.0
        today = dt.date.min
        queued = 0

        def finished(done: SimDone) -> None:
            nonlocal queued
            flight = in_flight.pop(done.tag)
            dep = flight.deployment
            usage = done.usage
            costing = flight.metering.end(usage, t0_ + done.end_s)
            attempts = None
            if flight.attempts:
                attempts = _attempts_json(
                    flight.attempts, dep.backend_id, "ok", None, usage.prompt_tokens,
                    usage.completion_tokens, costing.joules, costing.usd_total,
                )  # fmt: skip
            duration = usage.duration_s or 0.0
            if flight.quote is not None and not flight.attempts:
                calibration.observe(
                    dep.backend_id, flight.quote, usage.time_to_first_token_s, duration
                )
            record(
                usage_record(
                    request_id=f"{id_prefix}{done.tag}",
                    arrived=t0_ + flight.arrival,
                    key=flight.request.key,
                    group=flight.group,
                    requested_model=flight.request.model or self.default_model,
                    operation="chat",
                    stream=False,
                    deployment=dep,
                    backend_kind=kinds[dep.backend_id],
                    status="ok",
                    error_code=None,
                    tokens=(usage.prompt_tokens, usage.completion_tokens),
                    ttft_s=usage.time_to_first_token_s,
                    duration_s=duration,
                    costing=costing,
                    fallbacks=len(flight.attempts),
                    attempts=attempts,
                    usage=usage,
                    quote=flight.quote,
                )
            )
            queued += 1
            stats.served_by(
                flight.cls,
                dep.backend_id,
                kinds[dep.backend_id] == "asic",
                dep.adapter is not None,
                usage.time_to_first_token_s,
                duration,
                usage.completion_tokens,
                done.end_s,
            )

        t0_ = 0.0
        tag = 0
        for request in requests:
            if t0 is None:
                t0 = t0_ = request.at
                day0 = t0 - t0 % 86400
                today = dt.datetime.fromtimestamp(day0, dt.UTC).date()
            at = now = request.at - t0_
            for _, sim in sim_items:
                done_list = sim.advance(at)
                if done_list:
                    for done in done_list:
                        finished(done)
            if queued >= FLUSH_EVERY:
                await ledger.flush()
                queued = 0
            tag += 1
            if progress is not None and tag % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
            cls = stats.arrived(request.cls, at)
            name = request.model or self.default_model
            found = entries.get(name)
            if found is None:
                found = entries[name] = self._entry(name)
            entry, policy, router, _ = found
            days = int((request.at - day0) // 86400)
            freshness = request.freshness
            need_key = (
                days,
                freshness.min_knowledge_cutoff if freshness else None,
                freshness.max_staleness_days if freshness else None,
                entry.name,
            )
            need = needs.get(need_key)
            if need is None:
                if len(needs) > 4096:
                    needs.clear()
                need = needs[need_key] = resolve_need(
                    freshness, None, None, policy.freshness, today + dt.timedelta(days=days)
                )
            prompt, output = request.prompt_tokens, request.output_tokens
            statuses = {bid: sims[bid].status(at) for bid in found[3]}
            try:
                decision = decide(
                    entry.name,
                    entry.deployments,
                    RequestShape(prompt_tokens=prompt, output_tokens=output),
                    need,
                    statuses,
                    quotes,
                    (),
                    router,
                    policy.router,
                    policy.policy,
                    max_ttft_ms,
                    output,
                    "chat",
                )
            except FreshetError as exc:
                stats.refused_for(cls, _reason(exc))
                continue
            attempts: list[tuple[str, FreshetError]] = []
            group = entry.name if entry.kind == "group" else None
            for candidate in decision.ordered[: self.max_attempts]:
                dep = candidate.deployment
                bid = dep.backend_id
                metering = costs[bid].begin(f"{id_prefix}{tag}", prompt)
                try:
                    sims[bid].submit(
                        SimRequest(
                            tag=tag,
                            arrival_s=at,
                            prompt_tokens=prompt,
                            output_tokens=output,
                            adapter=dep.adapter,
                        )
                    )
                except FreshetError as exc:
                    metering.end(None, request.at)
                    attempts.append((bid, exc))
                    stats.backends[bid].failed += 1
                    continue
                in_flight[tag] = _InFlight(
                    request, at, dep, metering, attempts, cls, group, candidate.quote
                )
                break
            else:
                record(
                    self._refused_everywhere(
                        request, f"{id_prefix}{tag}", attempts, group, decision
                    )
                )
                queued += 1
                stats.refused_for(cls, _final_reason([e for _, e in attempts]))
        for _, sim in sim_items:
            for done in sim.advance(float("inf")):
                finished(done)
        if progress is not None:
            progress(tag % PROGRESS_EVERY)
        await ledger.flush()
        end = stats.window_s + (stats.first_at or 0.0)
        prices = getattr(self.model, "prices", None)
        return RunResult(
            stats=stats,
            backends=[
                BackendResult(
                    id=c.id,
                    type=c.type,
                    kind=self.kinds[c.id],
                    profile=self.fleet.backends[c.id].profile,
                    totals=self.sims[c.id].totals(end),
                )
                for c in self.settings.backends
            ],
            t0=t0_,
            kwh_usd=float(getattr(prices, "kwh_usd", 0.0)),
            pue=float(getattr(prices, "pue", 1.0)),
        )

    def _entry(self, name: str) -> tuple[Entry, GroupPolicy, Router, list[str]]:
        try:
            entry = self.catalog.resolve(name)
        except ModelNotFound:
            names = ", ".join(sorted(e.name for e in self.catalog.entries()))
            raise TraceError(
                f"the trace asks for model {name!r}, which this fleet "
                f"({self.settings.config_file or 'embedded default'}) does not serve; it has: "
                f"{names} (choose one with --model)"
            ) from None
        policy = self.settings.group_policies.get(entry.name, DEFAULT_POLICY)
        backends = list(dict.fromkeys(d.backend_id for d in entry.deployments))
        return entry, policy, self.routers[policy.router], backends

    def _refused_everywhere(
        self,
        request: TraceRequest,
        request_id: str,
        attempts: list[tuple[str, FreshetError]],
        group: str | None,
        decision: Decision,
    ) -> UsageRecord:
        """Every candidate refused before its first byte: the one record of the last one
        tried, as live (an error, no tokens, no cost)."""
        last_id, _ = attempts[-1]
        dep = next(c.deployment for c in decision.ordered if c.deployment.backend_id == last_id)
        errors = [e for _, e in attempts]
        final = errors[0] if all(400 <= e.status < 500 for e in errors) else errors[-1]
        refused = attempts[:-1]
        code = final.code or final.type
        return usage_record(
            request_id=request_id,
            arrived=request.at,
            key=request.key,
            group=group,
            requested_model=request.model or self.default_model,
            operation="chat",
            stream=False,
            deployment=dep,
            backend_kind=self.kinds[dep.backend_id],
            status="error",
            error_code=final.code,
            tokens=(0, 0),
            ttft_s=None,
            duration_s=0.0,
            costing=Costing(joules=None, energy_source=None),
            fallbacks=len(refused),
            attempts=_attempts_json(refused, dep.backend_id, "error", code, 0, 0, None, 0.0)
            if refused
            else None,
        )


def _attempts_json(
    refused: list[tuple[str, FreshetError]],
    backend: str,
    status: str,
    error_code: str | None,
    prompt: int,
    completion: int,
    joules: float | None,
    usd: float,
) -> str:
    rows = [AttemptUsage(backend=b, status="error", error_code=str(e.status)) for b, e in refused]
    rows.append(
        AttemptUsage(
            backend=backend,
            status=status,
            error_code=error_code,
            prompt_tokens=prompt,
            completion_tokens=completion,
            joules=joules,
            usd_total=usd,
        )
    )
    return msgspec.json.encode(rows).decode()


def _reason(exc: FreshetError) -> str:
    if isinstance(exc, FreshnessUnsatisfiable):
        return "freshness"
    if isinstance(exc, ContextLengthExceeded):
        return "context"
    if isinstance(exc, (RateLimited, BackendUnavailable)):
        return "capacity"
    return "other"


def _final_reason(errors: list[FreshetError]) -> str:
    if all(400 <= e.status < 500 for e in errors):
        return _reason(errors[0])
    return "other"


def _default_model(entries: Iterable[Entry]) -> str:
    """Requests that name no model ask for ``auto`` if the fleet has it, else its only
    group, else its only model."""
    listed = list(entries)
    names = {e.name for e in listed}
    if "auto" in names:
        return "auto"
    groups = [e.name for e in listed if e.kind == "group"]
    if len(groups) == 1:
        return groups[0]
    if len(listed) == 1:
        return listed[0].name
    return ""  # resolved per request: an error naming the choices


__all__ = ["Engine", "RunResult", "replay_settings"]
