"""A backend that draws nothing and costs nothing by the hour (a paid API's profile) keeps
its requests out of the board's account: the same dollars and joules, no work per request."""

from __future__ import annotations

import asyncio
from typing import Any

from freshet_energy import EnergyCostModel, model_meter

from gateway.builtins.deterministic import DeterministicBackend
from gateway.plugin_api import Backend, BackendConfig, BackendUsage


class _NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


def _cost(profile: dict[str, Any]) -> Any:
    config = BackendConfig(
        id="api",
        type="deterministic",
        profile=profile,
        list_price={"input_per_mtok": 1.10, "output_per_mtok": 4.40},
        energy={"meter": "model"},
    )
    backend = DeterministicBackend(config, _NoFleet())
    return EnergyCostModel({}, {"model": model_meter}).for_backend(backend, config)


USAGE = BackendUsage(prompt_tokens=2000, completion_tokens=800)


def _run(cost: Any, overlapping: int) -> tuple[list[Any], int]:
    """``overlapping`` requests at once, each passing tokens, ending in turn; and how many
    the board's account held while they ran."""

    async def go() -> tuple[list[Any], int]:
        meterings = [cost.begin(f"req_{i}", 2000) for i in range(overlapping)]
        held = cost.board.active
        await asyncio.sleep(0.01)
        for m in meterings:
            for _ in range(8):
                m.tokens += 1
        return [m.end(USAGE) for m in meterings], held

    return asyncio.run(go())


def test_a_free_board_is_not_walked_and_charges_the_list_price() -> None:
    cost = _cost({"kind": "remote", "watts_idle": 0, "watts_active": 0, "max_concurrency": 64})
    costings, held = _run(cost, 16)
    assert held == 0  # nobody was ever in the account
    assert cost.board.worked == []
    for c in costings:
        assert c.joules == 0
        assert c.usd_energy == 0
        assert c.usd_capex == 0
        assert c.usd_list == 2000 * 1.10 / 1e6 + 800 * 4.40 / 1e6
        assert c.usd_total == c.usd_list


def test_a_board_that_draws_or_costs_is_still_accounted() -> None:
    for profile in (
        {"kind": "gpu", "watts_idle": 0, "watts_active": 300, "max_concurrency": 8},
        {"kind": "remote", "capex_per_hour": 2.0, "max_concurrency": 8},
    ):
        cost = _cost(profile)
        costings, held = _run(cost, 4)
        assert held == 4
        assert all(c.busy_s > 0 for c in costings)
        assert all(c.usd_energy + c.usd_capex > 0 for c in costings)
