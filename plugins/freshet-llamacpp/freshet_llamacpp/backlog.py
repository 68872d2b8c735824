"""The work a llama.cpp backend has committed to, for the router's quote (``busy_s``).

Each request is tracked from the moment it asks for a model instance until its thread
has stopped: its prompt (estimated from its characters until the tokenizer has counted
it), the output it may produce (its ``max_tokens``, else the deployment's default), and
the tokens produced so far. ``busy_s`` is when the first instance would be free for a
request admitted now: every running request's remaining prefill and decode, then the
queued ones in order (each on the instance that frees first).

The rates are the ones seen lately, not only the calibrated ones: a CPU shared with other
work runs the model at a pace that changes by the minute. Every request that ends gives a
prefill and a decode figure (seconds per token), kept as a moving average; until the first
one, the profile's (calibrated) rates apply. A running request's decode is timed by its own
pace so far. A request that stops early frees its instance earlier than this says; the
gateway's learned correction (``gateway.state.quotes``) takes in the difference on average.
"""

from __future__ import annotations

import heapq
import itertools

from gateway.plugin_api import GenerationRequest

CHARS_PER_TOKEN = 4.0  # a prompt's size before the tokenizer has counted it


SMOOTHING = 0.3  # weight of the newest request in the moving averages of the rates


class Job:
    __slots__ = ("first_at", "output", "produced", "prompt", "started")

    def __init__(self, prompt: int, output: int) -> None:
        self.prompt = prompt
        self.output = output
        self.produced = 0
        self.started: float | None = None  # monotonic time an instance took it
        self.first_at: float | None = None  # monotonic time its first token came


def prompt_estimate(request: GenerationRequest) -> int:
    chars = sum(len(m.content) for m in request.messages) + len(request.prompt or "")
    return max(1, round(chars / CHARS_PER_TOKEN))


class Backlog:
    """Requests holding or waiting for an instance, in arrival order."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count()
        self._estimates: dict[int, int] = {}  # by job, until its prompt is counted
        # Seconds per token seen lately (None: none seen yet, the profile's apply), and
        # the tokens the tokenizer counts beyond the estimate from characters (the chat
        # template's, mostly).
        self.prefill_s: float | None = None
        self.decode_s: float | None = None
        self.prompt_extra: float | None = None

    def add(self, prompt: int, output: int) -> int:
        """A request asks for an instance; ``prompt`` is its estimate from characters."""
        key = next(self._ids)
        self._jobs[key] = Job(max(1, round(prompt + (self.prompt_extra or 0.0))), output)
        self._estimates[key] = prompt
        return key

    def counted(self, key: int, prompt: int) -> None:
        """The tokenizer counted the request's prompt."""
        job = self._jobs.get(key)
        estimate = self._estimates.pop(key, None)
        if job is not None:
            job.prompt = prompt
        if estimate is not None:
            self.prompt_extra = _average(self.prompt_extra, prompt - estimate)

    def job(self, key: int) -> Job | None:
        return self._jobs.get(key)

    def remove(self, key: int, now: float | None = None) -> None:
        """The request let its instance go; with ``now``, its pace updates the rates."""
        job = self._jobs.pop(key, None)
        self._estimates.pop(key, None)
        if job is None or now is None or job.started is None or job.first_at is None:
            return
        self.prefill_s = _average(self.prefill_s, (job.first_at - job.started) / job.prompt)
        if job.produced >= 2:
            self.decode_s = _average(self.decode_s, (now - job.first_at) / (job.produced - 1))

    def busy_s(self, instances: int, prefill_tps: float, decode_tps: float, now: float) -> float:
        """Seconds until an instance is free for a request admitted at ``now``."""
        c_prefill = self.prefill_s
        if c_prefill is None:
            c_prefill = 1.0 / prefill_tps if prefill_tps > 0 else 0.0
        c_decode = self.decode_s
        if c_decode is None:
            c_decode = 1.0 / decode_tps if decode_tps > 0 else 0.0
        free: list[float] = []
        queued: list[Job] = []
        for job in self._jobs.values():
            if job.started is None:
                queued.append(job)
                continue
            pace = c_decode
            if job.first_at is not None and job.produced >= 4:  # its own pace so far
                pace = (now - job.first_at) / (job.produced - 1)
            left = max(0, job.output - job.produced) * pace
            if job.first_at is None:  # still reading its prompt
                left += max(0.0, job.prompt * c_prefill - (now - job.started))
            free.append(left)
        free.sort()
        free = [0.0] * max(0, instances - len(free)) + free[:instances]
        heapq.heapify(free)
        for job in queued:
            start = heapq.heappop(free)
            heapq.heappush(free, start + job.prompt * c_prefill + job.output * c_decode)
        return free[0] if free else 0.0


def _average(old: float | None, new: float) -> float:
    return new if old is None else old + SMOOTHING * (new - old)
