"""The simulated clock: simulated seconds = wall seconds / ``time_scale``."""

from __future__ import annotations

import asyncio
import contextlib
import time


class SimClock:
    """Maps the event loop's monotonic clock to simulated seconds since the backend was built.

    ``time_scale`` is wall seconds per simulated second: 0.01 runs the card 100x faster
    than real time, 10 runs it 10x slower.
    """

    def __init__(self, time_scale: float) -> None:
        self.time_scale = time_scale
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) / self.time_scale

    def to_wall(self, sim_seconds: float) -> float:
        """A simulated duration in wall seconds."""
        return sim_seconds * self.time_scale

    def wall_of(self, sim_time: float) -> float:
        """The ``time.monotonic()`` reading at which simulated time ``sim_time`` falls."""
        return self._origin + sim_time * self.time_scale

    async def sleep_until(self, due: float) -> None:
        """Return at or after simulated time ``due``, never before it."""
        # The loop's timers may fire a hair early; loop until the due time has really come.
        while True:
            delay = (due - self.now()) * self.time_scale
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    async def wait_until(self, due: float, wake: asyncio.Event) -> None:
        """Sleep until ``due`` or until ``wake`` is set, whichever comes first."""
        delay = (due - self.now()) * self.time_scale
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()
