"""Performance models for ``freshet replay``: vLLM's continuous batching, and a paid API.

**vllm.** Each URL is one engine, scheduled as vLLM's (v1, chunked prefill) scheduler
does, in steps. A step decodes one token for every running sequence and spends what is
left of its token budget (``max_num_batched_tokens``) on prompts, oldest first, in chunks.
It lasts ``t_decode(b) + prefill_tokens / prefill_tokens_per_s``, where a decode step with
``b`` sequences takes ``1 / decode_tokens_per_s`` at ``b = 1`` and grows linearly to
``1 / decode_tokens_per_s_at_batch`` per stream at ``reference_batch``. A waiting request
is admitted while fewer than ``max_concurrency`` sequences run and its prompt plus output
fit what is left of the KV cache (``kv_cache_tokens``, reserved up front: no preemption).
A sequence's first token comes at the end of the step that finishes its prompt. Power is
the profile's ``power_curve`` over the sequences in a step; a step's energy goes to its
decoding sequences (the decode part of its time) and its prompt chunks (the rest, by
tokens). Requests go to the engine with the fewest in flight.

The work committed ahead of a new request (``BackendStatus.busy_s``, which the router's
quote adds to the request's own prefill and one decode step) is that engine's own: the rest
of the step under way, every prompt token queued before it at the prefill rate plus the
decode part of the steps that carry them, and, with every sequence slot or the KV cache
taken, the decode steps until enough running sequences finish (:meth:`VllmEngine.wait_s`).
A prompt's first token comes at the end of its step, and prompts that arrive after it but
before that step starts share it: that is the quote's error, at most one step (0.41 s for
8,192 prompt tokens). The live backend cannot see this queue: it reads requests running and
waiting from ``/metrics``, where a prompt being prefilled counts as running.

A backend with several URLs is several engines, and its profile describes them together, as
the cost model reads it: ``max_concurrency`` and ``power_curve`` count the requests of all
of them (so each of ``n`` engines takes ``max_concurrency / n`` sequences and draws
``power(n x b) / n`` with ``b`` running), ``capex_per_hour`` pays for all; the token rates
are those of one server.

Defaults for an H100 SXM with Llama 3.1 8B (``data/profiles-sources.md``): prefill 20,000
tok/s, decode 160 tok/s per stream at batch 1 (77 % of the bf16 roofline) and 80 at batch
64, i.e. 5,120 tok/s in all (MLPerf v5.1 server: 5,103 tok/s); power 100 W idle, 300 W at
batch 1 rising with log2 of the batch to 600 W at 128, so 557 W and 0.109 J/token at batch
64 (ML.ENERGY v3: 0.12); a KV cache of 458,752 tokens (80 GB x 0.9 less 16 GB of bf16
weights, at 128 KiB per token); 8,192 batched tokens a step (vLLM's default).

**openai-compatible.** A server elsewhere: a request waits ``ttft_s`` plus its prompt at
the profile's ``prefill_tokens_per_s`` (none by default) for its first token, then
streams at ``tokens_per_s``; up to ``max_in_flight`` at once (beyond: 429, as live), no
joules unless the profile has watts; its dollars are its ``list_price``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from msgspec import Meta, Struct

from gateway.plugin_api import (
    Backend,
    BackendConfig,
    BackendStatus,
    ContextLengthExceeded,
    HardwareProfile,
    PooledSimulator,
    RateLimited,
    RegisterSimulator,
    ServerPool,
    SimDone,
    SimRequest,
    SimTotals,
    convert_section,
    hookimpl,
    profile_watts,
    simulated_usage,
)

# 300 W at batch 1 to 600 W at batch 128, linear in log2(batch); 100 W idle.
DEFAULT_POWER_CURVE: tuple[tuple[float, float], ...] = (
    (0.0, 100.0),
    *((float(2**i), 300.0 + 300.0 * i / 7) for i in range(8)),
)

Positive = Annotated[float, Meta(gt=0)]
Count = Annotated[int, Meta(ge=1)]


class VllmSimOptions(Struct, kw_only=True, forbid_unknown_fields=True):
    """``--sim ID.KEY=VALUE`` for a ``vllm`` backend; the rest comes from its profile."""

    decode_tokens_per_s_at_batch: Positive = 80.0  # per stream, at reference_batch
    reference_batch: Count = 64
    kv_cache_tokens: Count = 458_752
    max_num_batched_tokens: Count = 8192


class _Seq:
    __slots__ = (
        "a_b",
        "a_j",
        "arrival",
        "busy_in",
        "energy_in",
        "first",
        "output",
        "prompt",
        "remaining",
        "reserve",
        "scheduled",
        "tag",
    )

    def __init__(self, request: SimRequest) -> None:
        self.tag = request.tag
        self.arrival = request.arrival_s
        self.prompt = request.prompt_tokens
        self.output = request.output_tokens
        self.reserve = request.prompt_tokens + request.output_tokens
        self.remaining = max(1, request.prompt_tokens)  # at least one step to its first token
        self.energy_in = 0.0
        self.busy_in = 0.0
        self.first = 0.0
        self.scheduled = -1.0
        self.a_j = 0.0
        self.a_b = 0.0


_MIXED, _DECODE = 0, 1


class VllmEngine:
    """One vLLM engine on a simulated clock (see the module's docstring)."""

    def __init__(
        self,
        *,
        prefill_tokens_per_s: float,
        decode_tokens_per_s: float,
        options: VllmSimOptions,
        max_seqs: int,
        watts: Callable[[float], float],
        busy_scale: float = 1.0,
    ) -> None:
        self._c_prefill = 1.0 / prefill_tokens_per_s
        self._t1 = 1.0 / decode_tokens_per_s
        ref = options.reference_batch
        t_ref = 1.0 / options.decode_tokens_per_s_at_batch
        self._slope = (t_ref - self._t1) / (ref - 1) if ref > 1 else 0.0
        self._kv_total = options.kv_cache_tokens
        self._budget = options.max_num_batched_tokens
        self._max_seqs = max_seqs
        self._power = [watts(n) for n in range(max_seqs + 1)]
        self._busy_scale = busy_scale  # one engine's share of the backend's capex
        self._waiting: deque[_Seq] = deque()
        self._prefilling: deque[_Seq] = deque()
        self._finishing: list[tuple[int, int, _Seq]] = []  # (finish step, order, seq)
        self._order = itertools.count()
        self._decoding = 0
        self._seqs = 0
        self._kv = 0
        self._backlog = 0  # prompt tokens not yet prefilled, admitted or waiting
        self._waiting_kv = 0  # the KV cache the waiting requests will reserve
        self._steps = 0
        self._a_j = 0.0  # joules per decoding sequence, integrated
        self._a_b = 0.0  # busy seconds per decoding sequence, integrated
        # The step under way: (end, kind, start, duration, batch, decode steps, chunks)
        self._step: tuple[float, int, float, float, int, int, list[tuple[_Seq, int]]] | None = None
        self._idle_since = 0.0
        self._idle_pending = 0.0
        self.joules = 0.0
        self.idle_joules = 0.0
        self.busy_s = 0.0
        self.done: list[SimDone] = []

    @property
    def in_flight(self) -> int:
        return self._seqs + len(self._waiting)

    @property
    def running(self) -> int:
        return self._seqs

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def fits(self, request: SimRequest) -> bool:
        return request.prompt_tokens + request.output_tokens <= self._kv_total

    def t_decode(self, batch: int) -> float:
        return self._t1 + (batch - 1) * self._slope

    def wait_s(self, now: float) -> float:
        """The work committed ahead of a request submitted at ``now``, as the quote counts it
        (``busy_s``; the quote adds the request's own prompt at the prefill rate and one
        decode step at batch 1): what is left of the step under way, every prompt token
        ahead of it at the prefill rate, the decode part of the steps that carry them and of
        its own, and, when every sequence slot (or the KV cache) is taken, the decode steps
        until enough running sequences finish to admit it."""
        step = self._step
        if step is None:
            return 0.0
        end, kind, start, t_step, _, _, chunks = step
        done = 0  # decode steps of the block under way already over
        if kind == _DECODE:  # a new prompt joins at the end of the decode step under way
            done = int((now - start) / t_step)
            end = min(end, start + (done + 1) * t_step)
        backlog = self._backlog - sum(take for _, take in chunks)
        batch = min(self._seqs, self._max_seqs)
        t_batch = self.t_decode(max(1, batch))
        steps = backlog // max(1, self._budget - batch) + 1
        wait = max(0.0, end - now) + backlog * self._c_prefill + steps * t_batch - self._t1
        return max(wait, self._admission_s(self._steps + done, t_batch))

    def _admission_s(self, steps_now: int, t_batch: float) -> float:
        """Seconds until the running sequences free a slot (and the KV cache the requests
        waiting before it reserve) for a request submitted now: 0 when there is room."""
        need_slots = self._seqs + len(self._waiting) + 1 - self._max_seqs
        need_kv = self._kv + self._waiting_kv - self._kv_total
        if need_slots <= 0 and need_kv <= 0:
            return 0.0
        # When each running sequence should finish, in decode steps from now: those decoding
        # by the heap, those still in their prompt after their whole output.
        finishes = sorted(
            [(step - steps_now, seq.reserve) for step, _, seq in self._finishing]
            + [(seq.output, seq.reserve) for seq in self._prefilling]
        )
        freed_kv = 0
        steps = -1
        for freed, (at, reserve) in enumerate(finishes, 1):
            freed_kv += reserve
            if freed >= need_slots and freed_kv >= need_kv:
                steps = at
                break
        if steps < 0:  # more ahead than run now: as many rounds again
            last = finishes[-1][0] if finishes else 0
            steps = last * max(need_slots, 1) // max(1, len(finishes))
        return steps * t_batch + self._backlog * self._c_prefill

    def submit(self, request: SimRequest) -> None:
        seq = _Seq(request)
        self._backlog += seq.remaining
        self._waiting_kv += seq.reserve
        self._waiting.append(seq)
        at = request.arrival_s
        step = self._step
        if step is None:
            self._idle(at)
            self._plan(at)
        elif step[1] == _DECODE and at < step[0]:
            # Decoding only, several steps planned at once: the new prompt joins at the end
            # of the step under way at its arrival.
            _, kind, start, t1, batch, steps, chunks = step
            done_by_then = int((at - start) / t1)
            if done_by_then + 1 < steps:
                steps = done_by_then + 1
                self._step = (start + steps * t1, kind, start, t1, batch, steps, chunks)

    def _idle(self, until: float) -> None:
        dt = until - self._idle_since
        if dt > 0:
            energy = self._power[0] * dt
            self.joules += energy
            self.idle_joules += energy
            self._idle_pending += energy
            self._idle_since = until

    def advance(self, until: float) -> None:
        while self._step is not None and self._step[0] <= until:
            end = self._step[0]
            self._complete(end)
            self._plan(end)
        if self._step is None and until != math.inf:
            self._idle(until)

    def _plan(self, now: float) -> None:
        waiting, prefilling = self._waiting, self._prefilling
        while (
            waiting
            and self._seqs < self._max_seqs
            and self._kv + waiting[0].reserve <= self._kv_total
        ):
            seq = waiting.popleft()
            self._seqs += 1
            self._kv += seq.reserve
            self._waiting_kv -= seq.reserve
            prefilling.append(seq)
        batch = self._decoding
        if prefilling:
            budget = self._budget - batch
            chunks: list[tuple[_Seq, int]] = []
            tokens = 0
            for seq in prefilling:
                if budget <= 0:
                    break
                take = min(seq.remaining, budget)
                if seq.scheduled < 0:
                    seq.scheduled = now
                chunks.append((seq, take))
                budget -= take
                tokens += take
            duration = (self.t_decode(batch) if batch else 0.0) + tokens * self._c_prefill
            self._step = (now + duration, _MIXED, now, duration, batch, 1, chunks)
        elif batch:
            t1 = self.t_decode(batch)
            steps = self._finishing[0][0] - self._steps
            self._step = (now + steps * t1, _DECODE, now, t1, batch, steps, [])
        else:
            self._step = None
            self._idle_since = now

    def _complete(self, end: float) -> None:
        assert self._step is not None
        _, kind, _, duration, batch, steps, chunks = self._step
        if kind == _DECODE:
            energy = self._power[batch] * duration * steps
            self.joules += energy
            self.busy_s += duration * steps
            self._a_j += energy / batch
            self._a_b += duration * steps / batch
            self._steps += steps
            self._finish_decoded(end)
            return
        in_step = batch + len(chunks)
        energy = self._power[min(in_step, self._max_seqs)] * duration
        self.joules += energy
        self.busy_s += duration
        decode_share = self.t_decode(batch) / duration if batch and duration > 0 else 0.0
        if batch:
            self._a_j += energy * decode_share / batch
            self._a_b += duration * decode_share / batch
            self._steps += 1
        self._finish_decoded(end)
        tokens = sum(take for _, take in chunks)
        prompt_j, prompt_s = energy * (1.0 - decode_share), duration * (1.0 - decode_share)
        for seq, take in chunks:
            seq.energy_in += prompt_j * take / tokens
            seq.busy_in += prompt_s * take / tokens
            seq.remaining -= take
            self._backlog -= take
            if seq.remaining:
                continue
            self._prefilling.popleft()  # chunks go oldest first: it is at the front
            seq.first = end
            if seq.output <= 1:
                self._finish(seq, end, decoding=False)
                continue
            seq.a_j, seq.a_b = self._a_j, self._a_b
            self._decoding += 1
            heapq.heappush(self._finishing, (self._steps + seq.output - 1, next(self._order), seq))

    def _finish_decoded(self, end: float) -> None:
        finishing = self._finishing
        while finishing and finishing[0][0] <= self._steps:
            self._finish(heapq.heappop(finishing)[2], end, decoding=True)

    def _finish(self, seq: _Seq, end: float, *, decoding: bool) -> None:
        if decoding:
            self._decoding -= 1
        self._seqs -= 1
        self._kv -= seq.reserve
        decode_j = self._a_j - seq.a_j if decoding else 0.0
        idle, self._idle_pending = self._idle_pending, 0.0
        usage = simulated_usage(
            prompt_tokens=seq.prompt,
            completion_tokens=seq.output,
            ttft_s=seq.first - seq.arrival if seq.output else None,
            duration_s=end - seq.arrival,
            active_j=seq.energy_in + decode_j,
            decode_j=decode_j,
            idle_j=idle,
            busy_s=(seq.busy_in + (self._a_b - seq.a_b if decoding else 0.0)) * self._busy_scale,
            queue_s=seq.scheduled - seq.arrival,
        )
        self.done.append(SimDone(tag=seq.tag, end_s=end, usage=usage))


class VllmSimulator:
    """A ``vllm`` backend: one :class:`VllmEngine` per URL."""

    def __init__(self, backend: Backend, config: BackendConfig, options: Mapping[str, Any]) -> None:
        opts = convert_section(dict(options), VllmSimOptions, None, f"--sim {config.id}")
        profile = backend.profile
        self.id = config.id
        self._max_context = backend.deployments[0].max_context
        # Validated by the backend already; mode engine has no URLs: one engine.
        urls = config.params.get("urls") or [None]
        self._max_in_flight: int | None = config.params.get("max_in_flight")
        explicit = {"watts_idle", "watts_active"} & set(config.profile)
        n = len(urls)
        watts: Callable[[float], float] = _default_watts()  # the sourced curve of one H100
        if profile.power_curve or explicit:  # the profile's: all servers together
            backend_watts = profile_watts(profile)

            def watts(b: float) -> float:
                return backend_watts(n * b) / n

        self.engines = [
            VllmEngine(
                prefill_tokens_per_s=profile.prefill_tokens_per_s,
                decode_tokens_per_s=profile.decode_tokens_per_s,
                options=opts,
                max_seqs=max(1, profile.max_concurrency // n),
                watts=watts,
                busy_scale=1.0 / n,
            )
            for _ in urls
        ]

    def submit(self, request: SimRequest) -> None:
        prompt, output = request.prompt_tokens, request.output_tokens
        engine = min(self.engines, key=lambda e: e.in_flight)
        if prompt + output > self._max_context or not engine.fits(request):
            raise ContextLengthExceeded(
                f"the prompt ({prompt} tokens) plus max_tokens ({output}) exceeds what "
                f"{self.id} holds ({self._max_context}-token context)",
                param="messages",
            )
        if self._max_in_flight is not None and engine.in_flight >= self._max_in_flight:
            raise RateLimited(f"{self.id}: {engine.in_flight} requests in flight on every server")
        engine.submit(request)

    def advance(self, until_s: float) -> list[SimDone]:
        if len(self.engines) == 1:
            engine = self.engines[0]
            engine.advance(until_s)
            done, engine.done = engine.done, []
            return done
        out: list[SimDone] = []
        for engine in self.engines:
            engine.advance(until_s)
            out.extend(engine.done)
            engine.done = []
        out.sort(key=lambda d: d.end_s)
        return out

    def status(self, now_s: float) -> BackendStatus:
        # The committed work of the engine the next request goes to (the fewest in flight,
        # as submit picks): what its own prefill queue, steps and slots hold, as the card's
        # simulator reports its own (see VllmEngine.wait_s).
        engine = min(self.engines, key=lambda e: e.in_flight)
        return BackendStatus(
            healthy=True,
            running=sum(e.running for e in self.engines),
            waiting=sum(e.waiting for e in self.engines),
            busy_s=engine.wait_s(now_s),
        )

    def totals(self, until_s: float) -> SimTotals:
        for engine in self.engines:
            engine.advance(until_s)
        return SimTotals(
            joules=sum(e.joules for e in self.engines),
            idle_joules=sum(e.idle_joules for e in self.engines),
            busy_s=sum(e.busy_s for e in self.engines) / len(self.engines),
        )


def _default_watts() -> Callable[[float], float]:
    return profile_watts(HardwareProfile(kind="gpu", power_curve=DEFAULT_POWER_CURVE))


class RemoteSimOptions(Struct, kw_only=True, forbid_unknown_fields=True):
    """``--sim ID.KEY=VALUE`` for an ``openai-compatible`` backend (assumed defaults)."""

    ttft_s: Annotated[float, Meta(ge=0)] = 0.5
    tokens_per_s: Positive = 100.0


class RemoteSimulator(PooledSimulator):
    """An ``openai-compatible`` backend: a server elsewhere, priced by its list price."""

    def __init__(self, backend: Backend, config: BackendConfig, options: Mapping[str, Any]) -> None:
        opts = convert_section(dict(options), RemoteSimOptions, None, f"--sim {config.id}")
        limit: int | None = config.params.get("max_in_flight")  # checked by the backend
        profile = backend.profile
        self._pool = ServerPool(
            backend_id=config.id,
            servers=limit,
            queue_limit=0 if limit is not None else None,
            prefill_tokens_per_s=profile.prefill_tokens_per_s,
            decode_tokens_per_s=opts.tokens_per_s,
            overhead_s=opts.ttft_s,
            watts=profile_watts(profile),
            max_context=backend.deployments[0].max_context,
        )


@hookimpl
def register_simulators(register: RegisterSimulator) -> None:
    register("vllm", VllmSimulator)
    register("openai-compatible", RemoteSimulator)
