"""LoRA adapters: deployments with their own cutoffs, LRU residency, swap cost; context cap."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from asic_sim_helpers import chat, completion
from freshet_asic_sim import AsicSimBackend

from gateway.flow.dispatch import open_stream
from gateway.flow.fleet import Fleet
from gateway.plugin_api import BackendUsage, ContextLengthExceeded, GenerationRequest, ModelNotFound

SWAP_S = 0.010


def adapter_fleet(make_fleet: Callable[[dict[str, Any]], Fleet], lora_slots: int) -> Fleet:
    return make_fleet(
        {
            "backends": [
                {
                    "id": "asic",
                    "type": "asic-sim",
                    "knowledge_cutoff": "unknown",
                    "time_scale": 0.01,
                    "lora_slots": lora_slots,
                    "adapters": [
                        {"name": "news-2025", "knowledge_cutoff": "2025-03-01"},
                        {"name": "legal"},
                    ],
                }
            ],
            "groups": {"chat": ["asic"]},
        }
    )


async def serve(fleet: Fleet, name: str) -> BackendUsage:
    """Route ``name`` the way the gateway does: catalog entry -> open_stream -> chunks."""
    entry = fleet.catalog.resolve(name)
    opened = await open_stream(fleet, entry.deployments, _request(name))
    usage = opened.first.usage
    async for chunk in opened.rest:
        usage = chunk.usage or usage
    assert usage is not None
    return usage


def _request(name: str) -> GenerationRequest:
    return msgspec.structs.replace(completion(100, 100), model=name)


@pytest.mark.asyncio
async def test_adapters_are_deployments_with_their_own_cutoffs(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    fleet = adapter_fleet(make_fleet, lora_slots=1)
    await fleet.start()
    names = {d.name: d for d in fleet.get("asic").deployments}
    assert set(names) == {"llama-3.1-8b", "llama-3.1-8b:news-2025", "llama-3.1-8b:legal"}
    assert names["llama-3.1-8b"].knowledge_cutoff == dt.date(2023, 12, 1)
    assert names["llama-3.1-8b:news-2025"].knowledge_cutoff == dt.date(2025, 3, 1)
    assert names["llama-3.1-8b:legal"].knowledge_cutoff == dt.date(2023, 12, 1)  # base's
    assert all(d.max_context == 2048 for d in names.values())
    # The group and the base name reach the adapters too, after the base (issue 20);
    # naming an adapter reaches it alone.
    expanded = ["llama-3.1-8b", "llama-3.1-8b:news-2025", "llama-3.1-8b:legal"]
    assert [d.name for d in fleet.catalog.resolve("chat").deployments] == expanded
    assert [d.name for d in fleet.catalog.resolve("llama-3.1-8b").deployments] == expanded
    assert [d.name for d in fleet.catalog.resolve("llama-3.1-8b:legal").deployments] == [
        "llama-3.1-8b:legal"
    ]
    await fleet.aclose()


@pytest.mark.asyncio
async def test_swap_cost_applies_only_when_the_adapter_is_not_resident(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    """One adapter slot per card: news, news, base, legal, news -> swap, -, -, swap, swap."""
    fleet = adapter_fleet(make_fleet, lora_slots=1)
    await fleet.start()
    backend = fleet.get("asic")
    assert isinstance(backend, AsicSimBackend)
    sequence = [
        ("llama-3.1-8b:news-2025", SWAP_S),  # first use: loaded
        ("llama-3.1-8b:news-2025", 0.0),  # resident
        ("llama-3.1-8b", 0.0),  # base weights are in silicon: never a swap
        ("llama-3.1-8b:legal", SWAP_S),  # evicts news-2025 (one slot)
        ("llama-3.1-8b:news-2025", SWAP_S),  # evicted, so loaded again
    ]
    durations = []
    for name, swap in sequence:
        usage = await serve(fleet, name)
        assert usage.timings["swap_s"] == pytest.approx(swap), name
        assert usage.timings["queue_s"] == 0.0
        durations.append(usage.duration_s or 0.0)
    # The swap is on the request's critical path: 10 ms more, for a 100/100 request.
    base = 100 / 100_000 + 100 / 16_000
    assert durations == pytest.approx([base + s for _, s in sequence])
    assert backend.model.resident(0) == ("news-2025",)
    await fleet.aclose()


@pytest.mark.asyncio
async def test_lru_keeps_recently_used_adapters_resident(
    make_fleet: Callable[[dict[str, Any]], Fleet],
) -> None:
    fleet = adapter_fleet(make_fleet, lora_slots=2)
    await fleet.start()
    swaps = [
        (await serve(fleet, name)).timings["swap_s"]
        for name in ("llama-3.1-8b:news-2025", "llama-3.1-8b:legal", "llama-3.1-8b:news-2025")
    ]
    assert swaps == pytest.approx([SWAP_S, SWAP_S, 0.0])
    await fleet.aclose()


@pytest.mark.asyncio
async def test_unknown_adapter_is_refused(make_backend: Callable[..., AsicSimBackend]) -> None:
    backend = make_backend(adapters=[{"name": "news-2025"}])
    request = msgspec.structs.replace(completion(10, 10), adapter="nope")
    with pytest.raises(ModelNotFound):
        await anext(backend.stream(request))
    assert backend.model.counts(backend.clock.now()) == (0, 0)


@pytest.mark.asyncio
async def test_context_cap_counts_prompt_plus_max_tokens(
    make_backend: Callable[..., AsicSimBackend],
) -> None:
    backend = make_backend(time_scale=0.01)
    # 2048 = 1048 + 1000 fits exactly; one more prompt token does not.
    fits = [c async for c in backend.stream(completion(1048, 1000))]
    assert fits[-1].usage is not None
    assert fits[-1].usage.completion_tokens == 1000
    with pytest.raises(ContextLengthExceeded) as too_long:
        await anext(backend.stream(completion(1049, 1000)))
    assert too_long.value.param == "prompt"
    assert too_long.value.status == 400
    assert too_long.value.code == "context_length_exceeded"
    # A chat prompt of 1 + (5 + 1039) + 4 = 1049 tokens, plus 1000: over by one.
    words = " ".join(["word"] * 1039)
    with pytest.raises(ContextLengthExceeded) as chat_too_long:
        await anext(backend.stream(chat(words, 1000)))
    assert chat_too_long.value.param == "messages"
    # A prompt that fills the context on its own is refused even without max_tokens.
    with pytest.raises(ContextLengthExceeded):
        await anext(backend.stream(chat(" ".join(["word"] * 2040), None)))
    # Nothing was queued or started by the refused requests.
    assert backend.model.counts(backend.clock.now()) == (0, 0)
    # Without max_tokens the default (256) is capped by what the context leaves.
    capped = [c async for c in backend.stream(completion(2000, None))]
    assert capped[-1].usage is not None
    assert capped[-1].usage.completion_tokens == 48
