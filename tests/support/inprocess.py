"""Helpers for driving the app in-process with Litestar's AsyncTestClient."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient


async def wait_ready(client: AsyncTestClient[Any]) -> None:
    """Poll /ready: the app's lifespan may run on another event loop than the test."""
    for _ in range(3000):  # 30 s
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the app did not become ready in 30 s")
