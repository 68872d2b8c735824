"""The built-in routing policies, registered through ``register_routers`` like a plugin's."""

from __future__ import annotations

from gateway.plugin_api import Candidate, RegisterRouter, hookimpl


class CheapestFresh:
    """Lowest quote first; ties go to the least loaded."""

    def order(self, candidates: list[Candidate], group: str) -> list[Candidate]:
        return sorted(candidates)  # by (score, load, rank): see Candidate


class RoundRobin:
    """Takes eligible candidates in turn, ignoring cost (a baseline, and for A/B tests)."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def order(self, candidates: list[Candidate], group: str) -> list[Candidate]:
        i = self._next.get(group, 0)
        self._next[group] = i + 1
        k = i % len(candidates)
        return candidates[k:] + candidates[:k]


@hookimpl
def register_routers(register: RegisterRouter) -> None:
    register("cheapest-fresh", CheapestFresh)
    register("round-robin", RoundRobin)
