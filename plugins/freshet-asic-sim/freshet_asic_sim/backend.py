"""The ``asic-sim`` backend: a card with one model in silicon, in time, energy and limits.

Text comes from a functional twin backend (``twin: <backend id>``) or from the synthetic
filler; *when* it arrives and *what it costs* come from the card model
(:mod:`freshet_asic_sim.schedule`). Output token ``i`` is delivered no earlier than the
card's schedule for it and, with a twin, no earlier than the twin produced it. The event
loop cannot sleep 1/16,000 s, so the stream sleeps until the next token is due and then
sends every token already due (in one chunk when ``coalesce`` is on, the default).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence

import msgspec

from freshet_asic_sim.admission import (
    check_adapter,
    default_profile,
    deployments,
    output_budget,
)
from freshet_asic_sim.clock import SimClock
from freshet_asic_sim.feeds import Feed, Piece, SyntheticFeed, TwinFeed
from freshet_asic_sim.params import (
    DEFAULT_KNOWLEDGE_CUTOFF,
    DEFAULT_MODEL,
    load_adapters,
    load_params,
)
from freshet_asic_sim.replay import TraceEntry, replay
from freshet_asic_sim.schedule import CardModel, QueueFull
from freshet_asic_sim.simulation import Simulation
from freshet_asic_sim.synthetic import filler, prompt_tokens, request_key
from gateway.plugin_api import (
    Backend,
    BackendConfig,
    BackendStatus,
    BackendUnavailable,
    BackendUsage,
    Chunk,
    ConfigError,
    Deployment,
    Fleet,
    GenerationRequest,
    HardwareKind,
    HardwareProfile,
    RateLimited,
    convert_profile,
)


class AsicSimBackend:
    """A simulated etched-ASIC backend (Taalas HC1-like, Llama 3.1 8B by default)."""

    kind: HardwareKind = "asic"

    def __init__(self, config: BackendConfig, fleet: Fleet) -> None:
        self.id = config.id
        self.params = load_params(config)
        if config.capabilities:
            # It answers with its twin's text: no tools, format or images to claim.
            raise ConfigError(
                "asic-sim serves text only (its twin's words); it can declare no capabilities",
                file=config.source,
                key=f"backends[{config.index}].capabilities",
            )
        self.model_id = config.model or DEFAULT_MODEL
        self.knowledge_cutoff = config.knowledge_cutoff or DEFAULT_KNOWLEDGE_CUTOFF
        adapters = load_adapters(config)
        self._adapters = {a.name for a in adapters}
        self._deployments = deployments(
            self.id,
            self.model_id,
            self.knowledge_cutoff,
            self.params.max_context,
            adapters,
            # 256 tokens by default; the context (prompt + output) is the ceiling.
            config.output_caps(self.params.default_max_tokens, None),
        )
        self._profile = convert_profile(config, default_profile(self.params))
        self._config = config
        self._fleet = fleet
        # Resolved now, so that an unknown id is a config error at load, not a card that
        # never gets ready (the fleet builds a twin listed later first).
        self._twin: Backend | None = self._resolve_twin() if self.params.twin else None
        self._closed = False
        self.clock = SimClock(self.params.time_scale)
        self.model = CardModel(self.params, now=self.clock.now())
        self._waiters: dict[int, asyncio.Event] = {}

    @property
    def deployments(self) -> Sequence[Deployment]:
        return self._deployments

    @property
    def profile(self) -> HardwareProfile:
        return self._profile

    @property
    def twin(self) -> Backend | None:
        return self._twin

    def _resolve_twin(self) -> Backend:
        key = f"backends[{self._config.index}].twin"
        try:
            twin = self._fleet.get(str(self.params.twin))
        except ConfigError as exc:
            if exc.key is not None:  # the twin's own entry is wrong, and its error says where
                raise
            raise ConfigError(exc.reason, file=self._config.source, key=key) from exc
        if not twin.deployments:
            raise ConfigError(
                f"twin backend {twin.id!r} serves no model", file=self._config.source, key=key
            )
        return twin

    async def start(self) -> None:
        return None

    async def status(self) -> BackendStatus:
        now = self.clock.now()
        running, waiting = self.model.counts(now)
        busy, loaded = self.model.outlook(now)
        busy_s = self.clock.to_wall(busy)
        if self._twin is not None:
            # The text comes from the twin: a request waits for it too.
            twin_busy = (await self._twin.status()).busy_s
            busy_s = max(busy_s, twin_busy or 0.0)
        p = self.params
        ready = self.params.twin is None or self._twin is not None
        detail = f"{p.cards} card(s) x {p.streams_per_card} stream(s), time_scale {p.time_scale}"
        if p.twin:
            detail += f", text from twin {p.twin}"
        return BackendStatus(
            healthy=ready and not self._closed,
            running=running,
            waiting=waiting,
            observed_at=time.time(),
            detail=detail,
            # The card model knows when each stream frees (its queue planned): exact; with a
            # twin, no earlier than the twin is free.
            busy_s=busy_s,
            adapters_loaded=loaded,
            adapter_swap_s=self.clock.to_wall(p.lora_swap_s),
            adapter_slots=p.lora_slots * p.cards,
        )

    async def aclose(self) -> None:
        self._closed = True

    def simulate(
        self, prompt_tokens: int, output_tokens: int, at_time: float, adapter: str | None = None
    ) -> Simulation:
        """Timings and joules of a request arriving at ``at_time`` (simulated seconds on this
        backend's clock, see ``clock.now()``), given the live queue; serves nothing."""
        try:
            return self.model.simulate(prompt_tokens, output_tokens, at_time, adapter)
        except QueueFull as exc:
            raise self._rate_limited(exc) from None

    def replay(self, trace: Iterable[TraceEntry]) -> list[Simulation | None]:
        """Run a whole trace through a fresh model of these cards (None: refused, queue full)."""
        return replay(self.params, trace)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if self._closed:
            raise BackendUnavailable(f"backend {self.id} is closed")
        if self.params.twin is not None and self._twin is None:
            raise BackendUnavailable(f"backend {self.id} is not started (twin unresolved)")
        wall_start = time.monotonic()
        prompt = prompt_tokens(request)
        planned = output_budget(self.id, self.params, request, prompt, self._deployments[0])
        check_adapter(self.id, self._adapters, request)
        try:
            lease = self.model.admit(prompt, planned, request.adapter, self.clock.now())
        except QueueFull as exc:
            raise self._rate_limited(exc) from None
        wake = asyncio.Event()
        self._waiters[lease] = wake
        feed = self._feed(request, planned, wake)
        ended = False
        try:
            await self._wait_for_start(lease, feed, wake)
            buffer: list[str] = []
            delivered: list[float] = []
            lag = 0.0
            i = 0
            while True:
                if buffer and not feed.ready():
                    yield _flush(buffer, delivered)
                piece = await feed.next()
                if piece.final:
                    break
                due = self.model.token_due(lease, i)
                if self.clock.now() < due:
                    if buffer:
                        yield _flush(buffer, delivered)
                    await self.clock.sleep_until(due)
                lag = max(lag, piece.produced_at - self.clock.wall_of(due))
                buffer.append(piece.text)
                i += 1
                if not self.params.coalesce:
                    yield _flush(buffer, delivered)
            if buffer:
                yield _flush(buffer, delivered)
            completion = piece.usage.completion_tokens if piece.usage else i
            if completion < planned:  # stopped early: the stream frees earlier
                self.model.truncate(lease, completion, self.clock.now())
                self._notify()
            await self.clock.sleep_until(self.model.lease(lease).end)
            sim = self.model.finish(lease, self.clock.now())
            ended = True
            self._notify()
            usage = self._usage(sim, piece, wall_start, delivered, lag)
            yield Chunk(
                finish_reason=piece.finish_reason, usage=usage, stop_sequence=piece.stop_sequence
            )
        finally:
            self._waiters.pop(lease, None)
            if not ended:  # consumer gone or source failed: free the stream now
                self.model.cancel(lease, self.clock.now())
                self._notify()
            await feed.aclose()

    # -- helpers ---------------------------------------------------------------------

    async def _wait_for_start(self, lease: int, feed: Feed, wake: asyncio.Event) -> None:
        """Queue until the lease starts; its plan may move earlier while it waits."""
        while (start := self.model.lease(lease).start) > self.clock.now():
            wake.clear()
            await self.clock.wait_until(start, wake)
            feed.raise_if_failed()  # a failed twin lets the gateway fall back now

    def _notify(self) -> None:
        for event in self._waiters.values():
            event.set()

    def _feed(self, request: GenerationRequest, planned: int, wake: asyncio.Event) -> Feed:
        if self._twin is None:
            return SyntheticFeed(filler(planned, request_key(request)))
        twin_request = msgspec.structs.replace(
            request, model=self._twin.deployments[0].model, adapter=None, max_tokens=planned
        )
        return TwinFeed(self._twin, twin_request, wake.set)

    def _rate_limited(self, exc: QueueFull) -> RateLimited:
        return RateLimited(
            f"backend {self.id}: all {self.model.slots} streams are busy and {exc.waiting} "
            f"requests are waiting (queue_limit {self.params.queue_limit})",
            retry_after_s=self.clock.to_wall(exc.retry_after_s),
        )

    def _usage(
        self, sim: Simulation, final: Piece, wall_start: float, delivered: list[float], lag: float
    ) -> BackendUsage:
        scale = self.params.time_scale
        timings = sim.timings()
        timings["time_scale"] = scale
        timings["delivered_duration_s"] = (time.monotonic() - wall_start) / scale
        if delivered:
            timings["delivered_ttft_s"] = (delivered[0] - wall_start) / scale
        if self._twin is not None:
            timings["twin_lag_s"] = max(0.0, lag) / scale
        twin_usage = final.usage
        return BackendUsage(
            prompt_tokens=twin_usage.prompt_tokens if twin_usage else sim.prompt_tokens,
            completion_tokens=twin_usage.completion_tokens if twin_usage else sim.output_tokens,
            time_to_first_token_s=sim.ttft_s,
            duration_s=sim.duration_s,
            energy_joules=sim.energy_j,
            energy_source="simulated",
            timings=timings,
        )


def _flush(buffer: list[str], delivered: list[float]) -> Chunk:
    """One chunk with every buffered (already due) piece; remembers when it went out."""
    chunk = Chunk(text="".join(buffer))
    buffer.clear()
    delivered.append(time.monotonic())
    return chunk
