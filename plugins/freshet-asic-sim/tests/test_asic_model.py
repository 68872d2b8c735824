"""The card model on its own: planning, what-if, replay and idle-energy apportioning."""

from __future__ import annotations

import pytest
from freshet_asic_sim import AsicParams, CardModel, QueueFull, TraceEntry, replay
from freshet_asic_sim.synthetic import count_tokens, filler

S = 1000 / 100_000 + 1000 / 16_000  # one 1k/1k request on a stream


def test_simulate_is_a_what_if_that_changes_nothing() -> None:
    model = CardModel(AsicParams(), now=0.0)
    model.admit(1000, 1000, None, now=0.0)  # busy until S
    before = model.counts(0.0)
    first = model.simulate(1000, 1000, at_time=0.0)
    again = model.simulate(1000, 1000, at_time=0.0)
    assert first == again
    assert model.counts(0.0) == before == (1, 0)
    assert first.queue_s == pytest.approx(S)  # it would wait for the running request
    later = model.simulate(1000, 1000, at_time=2 * S)
    assert later.queue_s == 0.0


def test_replay_queues_fifo_and_refuses_beyond_the_limit() -> None:
    trace = [TraceEntry(at_s=0.0, prompt_tokens=1000, output_tokens=1000) for _ in range(4)]
    results = replay(AsicParams(queue_limit=2), trace)
    assert results[3] is None  # 1 running + 2 waiting: the 4th is refused
    ends = [r.end_s for r in results if r is not None]
    assert ends == pytest.approx([S, 2 * S, 3 * S])


def test_idle_energy_is_apportioned_without_loss() -> None:
    """Busy slot-seconds at active power, idle ones at idle power, host share always: the
    requests' joules add up to exactly the fleet's energy from t=0 to the last end."""
    params = AsicParams(cards=2)
    trace = [
        TraceEntry(at_s=at, prompt_tokens=500, output_tokens=out)
        for at, out in [(0.5, 1000), (0.55, 200), (0.6, 1000), (3.0, 50), (7.0, 1000)]
    ]
    results = [r for r in replay(params, trace) if r is not None]
    assert len(results) == 5
    horizon = max(r.end_s for r in results)
    busy = sum(r.busy_s for r in results)
    slots = params.cards * params.streams_per_card
    fleet_j = (
        params.watts_active * busy
        + params.watts_idle * (slots * horizon - busy)
        + params.host_watts * slots * horizon
    )
    assert sum(r.energy_j for r in results) == pytest.approx(fleet_j)
    # The request that ended the quiet spell from 3.x to 7.0 carries the spell's idle.
    last = max(results, key=lambda r: r.end_s)
    assert last.card_idle_j > 80 * 3.5  # both cards idle most of (3.0, 7.0]


def test_under_full_load_requests_pay_no_idle_share() -> None:
    trace = [TraceEntry(at_s=0.0, prompt_tokens=1000, output_tokens=1000) for _ in range(5)]
    results = replay(AsicParams(), trace)
    assert all(r is not None for r in results)
    assert [r.card_idle_j for r in results if r is not None] == [0.0] * 5


def test_cancelling_moves_waiting_requests_up() -> None:
    model = CardModel(AsicParams(), now=0.0)
    a = model.admit(1000, 1000, None, now=0.0)
    b = model.admit(1000, 1000, None, now=0.0)
    c = model.admit(1000, 1000, None, now=0.0)
    assert model.lease(c).start == pytest.approx(2 * S)
    assert model.cancel(b, now=0.01) is None  # it never started: it used nothing
    assert model.lease(c).start == pytest.approx(S)
    used = model.cancel(a, now=0.03)
    assert used is not None
    assert used.cancelled
    assert used.busy_s == pytest.approx(0.03)
    assert used.prefill_s == pytest.approx(0.010)
    assert used.output_tokens == 320  # tokens due in the 20 ms of decode it had
    assert model.lease(c).start == pytest.approx(0.03)


def test_queue_full_says_when_to_retry() -> None:
    model = CardModel(AsicParams(queue_limit=1), now=0.0)
    model.admit(1000, 1000, None, now=0.0)
    model.admit(1000, 1000, None, now=0.0)
    with pytest.raises(QueueFull) as full:
        model.admit(1000, 1000, None, now=0.02)
    assert full.value.retry_after_s == pytest.approx(S - 0.02)
    assert model.counts(0.02) == (1, 1)


@pytest.mark.parametrize("n", [0, 1, 2, 13, 14, 15, 257])
def test_filler_has_exactly_the_requested_tokens(n: int) -> None:
    text = "".join(filler(n, key=12345))
    assert count_tokens(text) == n
    assert text == "".join(filler(n, key=12345))  # deterministic
    if n > 20:
        assert "." in text
        assert text[0].isupper()
