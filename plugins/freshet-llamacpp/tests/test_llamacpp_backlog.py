"""The work a llama.cpp backend has committed (``busy_s``, issue #20): running requests'
tokens left, the queue ahead, on the instance that frees first, at the pace seen lately."""

from __future__ import annotations

import pytest
from freshet_llamacpp.backlog import Backlog, prompt_estimate

from gateway.plugin_api import GenerationRequest, Message

PREFILL, DECODE = 100.0, 10.0  # tokens per second: 10 ms and 100 ms a token


def started(backlog: Backlog, prompt: int, output: int, at: float) -> int:
    key = backlog.add(prompt, output)
    job = backlog.job(key)
    assert job is not None
    job.started = at
    return key


def test_idle_instances_are_free_now() -> None:
    backlog = Backlog()
    assert backlog.busy_s(2, PREFILL, DECODE, now=0.0) == 0.0
    started(backlog, 10, 10, at=0.0)
    assert backlog.busy_s(2, PREFILL, DECODE, now=0.0) == 0.0  # the second instance is free


def test_a_running_request_counts_its_prefill_and_tokens_left() -> None:
    backlog = Backlog()
    key = started(backlog, 50, 20, at=0.0)
    # Reading its prompt (0.5 s, 0.3 s of it left), then its 20 tokens (2 s).
    assert backlog.busy_s(1, PREFILL, DECODE, now=0.2) == pytest.approx(0.3 + 2.0)
    job = backlog.job(key)
    assert job is not None
    job.first_at, job.produced = 0.6, 5  # four tokens in 0.4 s after the first: its own pace
    assert backlog.busy_s(1, PREFILL, DECODE, now=1.0) == pytest.approx(15 * 0.1)


def test_the_queue_ahead_goes_to_the_instance_that_frees_first() -> None:
    backlog = Backlog()
    started(backlog, 10, 10, at=0.0)  # 0.1 s prefill, 10 tokens: 1.1 s
    started(backlog, 10, 30, at=0.0)  # 3.1 s
    backlog.add(100, 10)  # queued: 1 s prefill + 1 s decode, on the first: free at 3.1
    assert backlog.busy_s(2, PREFILL, DECODE, now=0.0) == pytest.approx(3.1)
    backlog.add(10, 4)  # queued after it: 0.5 s on one of them, the other still at 3.1
    assert backlog.busy_s(2, PREFILL, DECODE, now=0.0) == pytest.approx(3.1)
    backlog.add(10, 4)  # and 0.5 s on the other: both busy until 3.6
    assert backlog.busy_s(2, PREFILL, DECODE, now=0.0) == pytest.approx(3.6)


def test_the_pace_seen_lately_replaces_the_calibrated_one() -> None:
    backlog = Backlog()
    key = started(backlog, 10, 11, at=0.0)
    job = backlog.job(key)
    assert job is not None
    job.first_at, job.produced = 1.0, 11  # 0.1 s a prompt token, then 0.2 s a token
    backlog.remove(key, now=3.0)
    assert backlog.prefill_s == pytest.approx(0.1)
    assert backlog.decode_s == pytest.approx(0.2)
    started(backlog, 10, 5, at=3.0)
    backlog.add(10, 10)  # queued behind it
    # The running one: its prompt (1 s) and 5 tokens at 0.2 s; then the queued one: 1 s +
    # 2 s.
    assert backlog.busy_s(1, PREFILL, DECODE, now=3.0) == pytest.approx(1 + 1 + 1 + 2)


def test_prompts_are_estimated_until_the_tokenizer_counts_them() -> None:
    backlog = Backlog()
    request = GenerationRequest(
        request_id="r",
        operation="chat",
        model="m",
        messages=[Message(role="user", content="x" * 40)],
    )
    estimate = prompt_estimate(request)
    assert estimate == 10
    key = backlog.add(estimate, 1)
    backlog.counted(key, 40)  # the chat template's tokens too
    assert backlog.prompt_extra == 30
    other = backlog.add(estimate, 1)
    job = backlog.job(other)
    assert job is not None
    assert job.prompt == 40  # the next estimate counts what the template adds
