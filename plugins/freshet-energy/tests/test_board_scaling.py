"""The board account visits only the shares that worked in an interval, and splits the
energy exactly as a walk over every active share does (the account before it scaled)."""

from __future__ import annotations

from freshet_energy.board import BoardAccount, Share
from freshet_energy.counters import ModelledCounter
from freshet_energy.power import PowerCurve
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.plugin_api import HardwareProfile

PROFILE = HardwareProfile(
    kind="gpu",
    watts_idle=100,
    watts_active=400,
    max_concurrency=8,
    prefill_tokens_per_s=1000,
    decode_tokens_per_s=100,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Reference:
    """The split by walking every active share at each event (the first implementation)."""

    def __init__(self, counter: ModelledCounter, clock: Clock, idle: str) -> None:
        self.counter, self.clock, self.idle = counter, clock, idle
        self.prefill_cost = 1.0 / PROFILE.prefill_tokens_per_s
        self.decode_cost = 1.0 / PROFILE.decode_tokens_per_s
        self.active: dict[int, list[float]] = {}  # id: [prompt, tokens, counted, in, out, s]
        self.t, self.e = clock(), counter.read()
        self.idle_joules = self.carry = 0.0

    def advance(self) -> None:
        now = self.clock()
        if now <= self.t:
            return
        energy = self.counter.read()
        d_e, d_t = max(0.0, energy - self.e), now - self.t
        self.t, self.e = now, energy
        if not self.active:
            if self.idle == "attribute":
                self.carry += d_e
            else:
                self.idle_joules += d_e
            return
        d_e += self.carry
        self.carry = 0.0
        works = []
        for s in self.active.values():
            w_in, w_out = s[0] * self.prefill_cost, (s[1] - s[2]) * self.decode_cost
            s[0], s[2] = 0.0, s[1]
            works.append((s, w_in, w_out))
        total = sum(w_in + w_out for _, w_in, w_out in works)
        for s, w_in, w_out in works:
            f_in, f_out = (w_in / total, w_out / total) if total > 0 else (0.0, 1 / len(works))
            s[3] += d_e * f_in
            s[4] += d_e * f_out
            s[5] += d_t * (f_in + f_out)

    def set_concurrency(self) -> None:
        self.counter.concurrent = len(self.active)


Event = tuple[str, int, int, float]  # (begin|tokens|end|wait, share, amount, seconds)
events = st.lists(
    st.tuples(
        st.sampled_from(["begin", "tokens", "end", "wait"]),
        st.integers(0, 11),
        st.integers(0, 50),
        st.floats(0.0, 2.0),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(events=events, idle=st.sampled_from(["overhead", "attribute"]))
def test_the_split_is_the_walk_over_every_share(events: list[Event], idle: str) -> None:
    clock_a, clock_b = Clock(), Clock()
    counter_a = ModelledCounter(PowerCurve(PROFILE).watts, clock_a)
    counter_b = ModelledCounter(PowerCurve(PROFILE).watts, clock_b)
    board = BoardAccount(counter_a, PROFILE, clock_a, idle)  # type: ignore[arg-type]
    ref = Reference(counter_b, clock_b, idle)
    shares: dict[int, Share] = {}
    done: list[tuple[Share, list[float]]] = []
    for kind, i, amount, seconds in events:
        if kind == "wait":
            clock_a.t += seconds
            clock_b.t += seconds
        elif kind == "begin" and i not in shares:
            shares[i] = Share(float(amount))
            board.begin_share(shares[i])
            ref.advance()
            ref.active[i] = [float(amount), 0, 0, 0.0, 0.0, 0.0]
            ref.set_concurrency()
        elif kind == "tokens" and i in shares:
            shares[i].tokens += amount
            ref.active[i][1] += amount
        elif kind == "end" and i in shares:
            share = shares.pop(i)
            board.end(share)
            ref.advance()
            done.append((share, ref.active.pop(i)))
            ref.set_concurrency()
    for i, share in list(shares.items()):  # the rest end together, a second later
        clock_a.t += 1.0
        clock_b.t += 1.0
        board.end(share)
        ref.advance()
        done.append((share, ref.active.pop(i)))
        ref.set_concurrency()
    for share, r in done:
        assert abs(share.joules_in - r[3]) <= 1e-6 * max(1.0, r[3])
        assert abs(share.joules_out - r[4]) <= 1e-6 * max(1.0, r[4])
        assert abs(share.busy_s - r[5]) <= 1e-6 * max(1.0, r[5])
    board.advance()
    ref.advance()
    assert abs(board.idle_joules - ref.idle_joules) <= 1e-6 * max(1.0, ref.idle_joules)


def test_an_event_visits_the_shares_that_worked_not_every_share() -> None:
    clock = Clock()
    board = BoardAccount(
        ModelledCounter(PowerCurve(PROFILE).watts, clock),  # type: ignore[arg-type]
        PROFILE,
        clock,
    )
    waiting = [Share(10.0) for _ in range(1000)]  # e.g. requests waiting on an upstream
    for share in waiting:
        clock.t += 0.001
        board.begin_share(share)
    clock.t += 0.001
    board.advance()
    assert board.worked == []  # every prompt was booked; nobody worked since
    one = waiting[0]
    one.tokens += 3
    assert board.worked == [one]
    clock.t += 0.001
    board.advance()
    assert board.worked == []
    assert one.joules_out > 0
    assert all(s.joules_out == 0 for s in waiting[1:])
