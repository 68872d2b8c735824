"""Modelled board power: watts as a function of how many requests run at once."""

from __future__ import annotations

import itertools

from gateway.plugin_api import HardwareProfile


class PowerCurve:
    """Piecewise-linear watts over concurrent requests, from the hardware profile."""

    def __init__(self, profile: HardwareProfile) -> None:
        points = list(profile.power_curve) or [
            (0.0, profile.watts_idle),
            (float(max(1, profile.max_concurrency)), profile.watts_active),
        ]
        if points[0][0] > 0:
            points.insert(0, (0.0, profile.watts_idle))
        self._points = sorted((float(b), float(w)) for b, w in points)

    @property
    def draws_nothing(self) -> bool:
        """Zero watts at any load (a paid API's profile: generation happens elsewhere)."""
        return all(w == 0 for _, w in self._points)

    def watts(self, concurrent: float) -> float:
        pts = self._points
        if concurrent <= pts[0][0]:
            return pts[0][1]
        for (b0, w0), (b1, w1) in itertools.pairwise(pts):
            if concurrent <= b1:
                return w0 + (w1 - w0) * (concurrent - b0) / (b1 - b0)
        return pts[-1][1]

    @property
    def idle(self) -> float:
        return self._points[0][1]
