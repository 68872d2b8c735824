"""Under a server, once the backends are loaded, the heap is set aside from the cyclic
collector (gc.freeze): its full collections then walk only what requests allocate."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from gateway.api.app import GC_THRESHOLD, freeze_heap_when_started


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def _started() -> None:
    return None


async def _failed() -> None:
    raise RuntimeError("a backend did not load")


@pytest.mark.asyncio
async def test_a_started_runtime_freezes_the_heap() -> None:
    task = asyncio.create_task(_started())
    await task
    assert gc.get_freeze_count() == 0
    freeze_heap_when_started(task)
    assert gc.get_freeze_count() > 10_000  # the interpreter, pytest, the gateway's modules
    assert gc.get_threshold()[0] == GC_THRESHOLD  # young collections far apart


@pytest.mark.asyncio
async def test_a_failed_or_cancelled_start_freezes_nothing() -> None:
    failed = asyncio.create_task(_failed())
    with pytest.raises(RuntimeError):
        await failed
    freeze_heap_when_started(failed)
    cancelled = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    freeze_heap_when_started(cancelled)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] != GC_THRESHOLD
