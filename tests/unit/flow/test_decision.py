"""The router's choice: drop reasons, cheapest first, errors, and a property over fleets."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backend import BackendStatus, Deployment
from gateway.builtins.routers import CheapestFresh, RoundRobin
from gateway.cost import Metering, Quote, RequestShape
from gateway.errors import (
    BackendUnavailable,
    ContextLengthExceeded,
    FreshnessUnsatisfiable,
    RateLimited,
)
from gateway.flow.decision import CONTEXT_SLACK, decide
from gateway.routing import NO_NEED, Decision, Need
from gateway.settings import HealthSettings
from gateway.state.health import Circuit, LocalHealth


class FixedCost:
    """A cost model answer: joules and dollars per token, more when loaded."""

    def __init__(self, usd_per_token: float, energy_share: float = 0.5, ttft_s: float = 0.0):
        self.usd = usd_per_token
        self.energy_share = energy_share
        self.ttft_s = ttft_s

    def quote(self, shape: RequestShape, status: BackendStatus) -> Quote:
        total = self.usd * (shape.prompt_tokens + shape.output_tokens)
        return Quote(
            joules=total * 1e6,
            usd_energy=total * self.energy_share,
            usd_capex=total * (1 - self.energy_share),
            usd_list=0.0,
            ttft_s=self.ttft_s,
        )

    def begin(self, request_id: str, prompt_tokens: int, at: float | None = None) -> Metering:
        raise NotImplementedError


def dep(backend: str, cutoff: str | None = "2024-01-01", context: int = 4096) -> Deployment:
    return Deployment(
        backend_id=backend,
        model=f"m-{backend}",
        knowledge_cutoff=dt.date.fromisoformat(cutoff) if cutoff else None,
        max_context=context,
    )


SHAPE = RequestShape(prompt_tokens=100, output_tokens=100)


def run(
    deployments: list[Deployment],
    costs: dict[str, FixedCost],
    *,
    statuses: dict[str, BackendStatus] | None = None,
    need: Need = NO_NEED,
    down: frozenset[str] = frozenset(),
    policy: str = "full",
    max_ttft_ms: float | None = None,
    max_tokens: int | None = None,
    shape: RequestShape = SHAPE,
) -> Decision:
    statuses = statuses or {}
    return decide(
        "g",
        deployments,
        shape,
        need,
        {
            d.backend_id: statuses.get(d.backend_id, BackendStatus(healthy=True))
            for d in deployments
        },
        costs,  # type: ignore[arg-type]
        down,
        CheapestFresh(),
        "cheapest-fresh",
        policy,  # type: ignore[arg-type]
        max_ttft_ms,
        max_tokens,
    )


def need(date: str) -> Need:
    return Need(min_cutoff=dt.date.fromisoformat(date), source="body")


def test_cheapest_first_rest_as_fallbacks() -> None:
    d = run(
        [dep("a"), dep("b"), dep("c")], {"a": FixedCost(3), "b": FixedCost(1), "c": FixedCost(2)}
    )
    assert [c.deployment.backend_id for c in d.ordered] == ["b", "c", "a"]
    assert d.dropped == []
    assert "chosen=b" in d.header()


def test_ties_go_to_the_least_loaded() -> None:
    statuses = {"a": BackendStatus(healthy=True, running=5), "b": BackendStatus(healthy=True)}
    d = run([dep("a"), dep("b")], {"a": FixedCost(1), "b": FixedCost(1)}, statuses=statuses)
    assert d.ordered[0].deployment.backend_id == "b"


def test_full_ties_keep_the_configured_order() -> None:
    names = ["c", "a", "d", "b"]
    d = run([dep(n) for n in names], {n: FixedCost(1) for n in names})
    assert [c.deployment.backend_id for c in d.ordered] == names


def test_open_circuit_drops_the_backend_until_half_open() -> None:
    now = [0.0]
    health = LocalHealth(HealthSettings(consecutive_failures=1, ejection_s=5), clock=lambda: now[0])
    costs = {"a": FixedCost(1), "b": FixedCost(2)}
    assert health.unavailable() == frozenset()
    health.failure("a")
    d = run([dep("a"), dep("b")], costs, down=health.unavailable())
    assert [c.deployment.backend_id for c in d.ordered] == ["b"]
    assert [(c.deployment.backend_id, c.dropped) for c in d.dropped] == [("a", "unhealthy")]
    now[0] = 5.0  # half-open: probes go through again
    assert health.unavailable() == frozenset()
    assert run([dep("a"), dep("b")], costs, down=health.unavailable()).ordered[0].rank == 0
    health.failure("a")  # the probe failed: open again, for twice as long
    assert health.unavailable() == {"a"}
    health.success("a")  # a request from before: an open circuit stays open
    assert health.unavailable() == {"a"}
    now[0] = 15.0
    assert health.admit("a")  # half-open: one probe at a time
    assert health.unavailable() == {"a"}
    health.success("a")  # the probe's first chunk closes it
    assert health.unavailable() == frozenset()
    health.adopt("b", Circuit(state="open", opened_at=now[0], open_for_s=60))
    assert health.unavailable() == {"b"}


def test_marginal_policy_counts_energy_only() -> None:
    costs = {"owned": FixedCost(2, energy_share=0.1), "rented": FixedCost(1, energy_share=0.9)}
    full = run([dep("owned"), dep("rented")], costs)
    marginal = run([dep("owned"), dep("rented")], costs, policy="marginal")
    assert full.ordered[0].deployment.backend_id == "rented"
    assert marginal.ordered[0].deployment.backend_id == "owned"


def test_each_drop_reason_is_kept() -> None:
    deployments = [
        dep("stale", "2023-12-01"),
        dep("down"),
        dep("busy"),
        dep("small", context=256),
        dep("slow"),
        dep("ok"),
    ]
    costs = {d.backend_id: FixedCost(1) for d in deployments}
    costs["slow"] = FixedCost(1, ttft_s=5.0)
    costs["ok"] = FixedCost(9)
    statuses = {"busy": BackendStatus(healthy=True, saturated=True)}
    d = run(
        deployments,
        costs,
        statuses=statuses,
        need=need("2024-01-01"),
        down=frozenset({"down"}),
        max_ttft_ms=1000,
        max_tokens=200,
    )
    reasons = {c.deployment.backend_id: c.dropped for c in d.dropped}
    assert reasons["stale"] == "freshness(cutoff 2023-12-01)"
    assert reasons["down"] == "unhealthy"
    assert reasons["busy"] == "at_capacity"
    assert (reasons["small"] or "").startswith("context(")
    assert (reasons["slow"] or "").startswith("ttft(")
    assert [c.deployment.backend_id for c in d.ordered] == ["ok"]
    assert "dropped=stale:freshness" in d.header()


def test_no_fresh_candidate_is_422_naming_the_freshest() -> None:
    with pytest.raises(FreshnessUnsatisfiable, match="freshest available is 2024-06-01") as info:
        run(
            [dep("a", "2023-12-01"), dep("b", "2024-06-01")],
            {"a": FixedCost(1), "b": FixedCost(1)},
            need=need("2025-06-01"),
        )
    assert info.value.status == 422
    assert info.value.code == "freshness_unsatisfiable"


def test_all_unhealthy_is_panic_not_a_refusal() -> None:
    d = run(
        [dep("a", "2025-01-01"), dep("b", "2023-01-01"), dep("c", "2025-01-01")],
        {"a": FixedCost(2), "b": FixedCost(1), "c": FixedCost(1)},
        statuses={"c": BackendStatus(healthy=False)},
        need=need("2024-06-01"),
        down=frozenset({"a"}),
    )
    assert d.panic
    assert [c.deployment.backend_id for c in d.ordered] == ["c", "a"]  # cheapest first
    assert [(c.deployment.backend_id, c.dropped) for c in d.dropped] == [
        ("b", "freshness(cutoff 2023-01-01)")
    ]
    assert "panic=1" in d.header()
    healthy = run(
        [dep("a"), dep("b")], {"a": FixedCost(1), "b": FixedCost(1)}, down=frozenset({"a"})
    )
    assert not healthy.panic
    assert "panic" not in healthy.header()


def test_all_dropped_for_other_reasons_is_503_with_each_reason() -> None:
    with pytest.raises(BackendUnavailable, match=r"a: unhealthy; b: freshness"):
        run(
            [dep("a", "2025-01-01"), dep("b", "2023-01-01")],
            {"a": FixedCost(1, ttft_s=5.0), "b": FixedCost(1)},
            need=need("2024-06-01"),
            down=frozenset({"a"}),
            max_ttft_ms=1000,  # a is too slow as well: not even panic mode may send it
        )


def test_all_busy_is_429_and_all_too_small_is_400() -> None:
    busy = BackendStatus(healthy=True, saturated=True)
    with pytest.raises(RateLimited):
        run([dep("a")], {"a": FixedCost(1)}, statuses={"a": busy})
    with pytest.raises(ContextLengthExceeded):
        run([dep("a", context=100)], {"a": FixedCost(1)}, max_tokens=500)


def test_context_check_uses_the_estimate_lower_bound() -> None:
    # Estimated 1,000 prompt tokens: clearly over 512, but maybe under 950 (the backend
    # counts exactly and refuses itself if so), so 950 stays a candidate.
    shape = RequestShape(prompt_tokens=1000, output_tokens=10)
    d = run(
        [dep("a", context=512), dep("b", context=950)],
        {"a": FixedCost(1), "b": FixedCost(1)},
        shape=shape,
    )
    assert [c.deployment.backend_id for c in d.ordered] == ["b"]


def test_round_robin_takes_turns() -> None:
    rr = RoundRobin()
    firsts = []
    for _ in range(4):
        d = decide(
            "g",
            [dep("a"), dep("b")],
            SHAPE,
            NO_NEED,
            {"a": BackendStatus(healthy=True), "b": BackendStatus(healthy=True)},
            {"a": FixedCost(1), "b": FixedCost(1)},  # type: ignore[dict-item]
            frozenset(),
            rr,
            "round-robin",
        )
        firsts.append(d.ordered[0].deployment.backend_id)
    assert firsts == ["a", "b", "a", "b"]


fleets = st.lists(
    st.tuples(
        st.floats(min_value=0.01, max_value=100),  # $ per token
        st.floats(min_value=0.0, max_value=1.0),  # energy share
        st.sampled_from(["2023-06-01", "2023-12-01", "2024-06-01", "2025-01-01", None]),
        st.integers(min_value=64, max_value=8192),  # context
        st.booleans(),  # healthy
        st.booleans(),  # saturated
        st.integers(min_value=0, max_value=20),  # load
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    fleet=fleets,
    need_date=st.sampled_from([None, "2023-12-01", "2024-06-01"]),
    prompt=st.integers(min_value=1, max_value=6000),
    max_tokens=st.one_of(st.none(), st.integers(min_value=1, max_value=4000)),
    policy=st.sampled_from(["full", "marginal"]),
)
def test_property_chosen_is_eligible_and_cheapest(
    fleet: list[tuple[float, float, str | None, int, bool, bool, int]],
    need_date: str | None,
    prompt: int,
    max_tokens: int | None,
    policy: str,
) -> None:
    deployments, costs, statuses = [], {}, {}
    for i, (usd, share, cutoff, context, healthy, saturated, load) in enumerate(fleet):
        name = f"b{i}"
        deployments.append(dep(name, cutoff, context))
        costs[name] = FixedCost(usd, energy_share=share)
        statuses[name] = BackendStatus(healthy=healthy, saturated=saturated, running=load)
    shape = RequestShape(prompt_tokens=prompt, output_tokens=max_tokens or 256)
    the_need = need(need_date) if need_date else NO_NEED
    try:
        d = run(
            deployments,
            costs,
            statuses=statuses,
            need=the_need,
            policy=policy,
            max_tokens=max_tokens,
            shape=shape,
        )
    except (FreshnessUnsatisfiable, BackendUnavailable, RateLimited, ContextLengthExceeded):
        return  # then nothing was eligible; eligibility itself is checked below

    def eligible(i: int) -> bool:
        d_ = deployments[i]
        s = statuses[d_.backend_id]
        fresh = the_need.min_cutoff is None or (
            d_.knowledge_cutoff is not None and d_.knowledge_cutoff >= the_need.min_cutoff
        )
        fits = int(prompt * CONTEXT_SLACK) + (max_tokens or 0) <= d_.max_context
        # In panic mode (no healthy one fits) health is not asked.
        return fresh and (s.healthy or d.panic) and not s.saturated and fits

    def score(i: int) -> float:
        q = costs[deployments[i].backend_id].quote(shape, statuses[deployments[i].backend_id])
        return q.usd_energy if policy == "marginal" else q.usd_total

    chosen = int(d.ordered[0].deployment.backend_id[1:])
    assert eligible(chosen)
    assert all(score(chosen) <= score(i) for i in range(len(deployments)) if eligible(i))
    # The whole fallback list is in order: cheaper first, ties to the least loaded,
    # then the configured order.
    keys = [(c.score, c.load, c.rank) for c in d.ordered]
    assert keys == sorted(keys)
    assert [c.score for c in d.ordered] == [score(c.rank) for c in d.ordered]
    assert {c.deployment.backend_id for c in d.ordered} == {
        deployments[i].backend_id for i in range(len(deployments)) if eligible(i)
    }
