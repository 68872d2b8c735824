"""Quotes that learn from what happened: a per-backend correction of the quoted times.

The cost model quotes a request's time to first token and duration from the backend's
profile and the work it reports committed (:attr:`BackendStatus.busy_s`). What really
happens differs: the gateway's own overhead, a CPU shared with other work, a profile
measured on another day. Every finished request that had a quote adds the pair
(model's figure, actual) to its backend's window; the next quotes are corrected by what
the window says:

    corrected = max(0, factor x model + offset)

Two corrections are tried on the window, and the one that would have quoted it better
(the smaller median relative error) is kept: a *shift* (``factor`` 1, ``offset`` the
median of ``actual - model``: a fixed overhead, the gateway's own or the backend's) or a
*scale* (``offset`` 0, ``factor`` the median of ``actual / model``: a pace off by a
share, a CPU slower than calibrated). Medians, so one odd request moves neither; the
scale keeps an idle backend's short quote a quote where a negative shift would take it to
nothing. Memory is bounded (:data:`WINDOW` pairs per backend and measure). The correction
is per process: each ``freshet serve --workers`` process, and each gateway replica, learns
from the requests it routed. A backend that finished no request for :data:`FORGET_S`
(because every request's ``max_ttft_ms`` was below its corrected quote, say) is quoted by
its model again, and learns anew from the next requests it gets.

The quote error as given (corrected, so what the router and a client's ``max_ttft_ms``
relied on) is kept per backend too: ``/metrics`` and the UI show its p50 and p90.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping

import msgspec
from msgspec import Struct

from gateway.backend import BackendStatus
from gateway.cost import BackendCost, Metering, Quote, RequestShape

WINDOW = 16  # recent requests per backend and measure the fit uses
FORGET_S = 60.0  # a backend with no request finished for this long is quoted by its model
FACTOR_BOUNDS = (0.2, 5.0)
REFIT_EVERY = 4  # requests between fits, once the first FIRST_FITS are in
FIRST_FITS = 8
MIN_REFIT_S = 0.01  # and at most one fit per measure and backend in this time


class Fit:
    """One measure (TTFT or duration) of one backend: the window and the line fitted to it."""

    def __init__(self, window: int = WINDOW) -> None:
        self.pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self.errors: deque[float] = deque(maxlen=window)  # |actual - quoted| / actual
        self.factor = 1.0
        self.offset = 0.0
        self.observed = 0
        self._fitted_at = -math.inf

    def apply(self, model: float) -> float:
        return max(0.0, self.factor * model + self.offset)

    def observe(self, model: float, quoted: float, actual: float, now: float | None = None) -> None:
        """``model``: the cost model's figure; ``quoted``: what was promised (corrected);
        ``now``: the calibration's clock (without it, no time limit on fits)."""
        if actual > 0:
            self.errors.append(abs(actual - quoted) / actual)
        self.pairs.append((model, actual))
        self.observed += 1
        # A fit sorts the window a few times: after the first requests, then once every
        # REFIT_EVERY and at most once every MIN_REFIT_S, which keeps it off a busy
        # gateway's every request (at 2,000 requests a second to one backend, 100 fits a
        # second, not 500: the median of a 16-request window moves no faster).
        observed = self.observed
        if observed <= FIRST_FITS:
            self._refit()
        elif observed % REFIT_EVERY == 0:
            if now is None:
                self._refit()
            elif now - self._fitted_at >= MIN_REFIT_S:
                self._fitted_at = now
                self._refit()

    def _refit(self) -> None:
        pairs = self.pairs
        low, high = FACTOR_BOUNDS
        # A fixed overhead (a shift) or a pace off by a share (a scale): medians, so one
        # odd request moves neither; the one that would have quoted the window better.
        shift = _median([y - x for x, y in pairs])
        ratios = [y / x for x, y in pairs if x > 0]
        scale = min(high, max(low, _median(ratios))) if ratios else 1.0
        by_shift, by_scale = _error(pairs, 1.0, shift), _error(pairs, scale, 0.0)
        if by_shift < by_scale or (by_shift == by_scale and shift >= 0):
            self.factor, self.offset = 1.0, shift
        else:
            self.factor, self.offset = scale, 0.0

    def error_quantiles(self) -> tuple[float, float] | None:
        """(p50, p90) of the recent relative errors; None before any."""
        if not self.errors:
            return None
        ordered = sorted(self.errors)
        return _quantile(ordered, 0.5), _quantile(ordered, 0.9)


def _error(pairs: Iterable[tuple[float, float]], factor: float, offset: float) -> float:
    """The median relative error of ``max(0, factor x model + offset)`` over ``pairs``, the
    clamp at 0 written out: ``max()`` of two floats is a call that builds a tuple, and a
    fit runs on the request path (a test holds this equal to the formula)."""
    return _median(
        [
            abs(y - (v if (v := factor * x + offset) > 0.0 else 0.0)) / y if y > 0 else 0.0
            for x, y in pairs
        ]
    )


def _median(values: list[float]) -> float:
    """As :func:`statistics.median` (the mean of the middle two of an even count), for the
    few values of a window, without its generality: a fit runs on the request path."""
    values.sort()
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class BackendFits(Struct, kw_only=True):
    ttft: Fit
    duration: Fit
    last_at: float = -math.inf  # when the last request that went as planned ended


class FitView(Struct, kw_only=True):
    """What ``/freshet/backends`` and ``/metrics`` show of a backend's correction."""

    observed: int
    ttft_factor: float
    ttft_offset_s: float
    duration_factor: float
    duration_offset_s: float
    ttft_error_p50: float | None
    ttft_error_p90: float | None
    duration_error_p50: float | None
    duration_error_p90: float | None


class QuoteCalibration:
    """Every backend's fits, in this process. Observed as requests finish, read per quote."""

    def __init__(
        self,
        window: int = WINDOW,
        clock: Callable[[], float] = time.monotonic,
        forget_s: float = FORGET_S,
    ) -> None:
        self._window = window
        self._fits: dict[str, BackendFits] = {}
        self._lock = threading.Lock()  # fits are read by the scrape thread too
        self._clock = clock  # the replay's is its simulated one
        self._forget_s = forget_s

    def fits(self, backend_id: str) -> BackendFits:
        fits = self._fits.get(backend_id)
        if fits is None:
            fits = self._fits[backend_id] = BackendFits(
                ttft=Fit(self._window), duration=Fit(self._window)
            )
        return fits

    def correct(self, backend_id: str, quote: Quote) -> Quote:
        """``quote`` with its TTFT and duration corrected; the model's own figures kept in
        ``model_ttft_s`` and ``model_duration_s``. A backend that has finished no request
        for :data:`FORGET_S` is quoted by its model again: a correction that priced it out
        of every request (each with a ``max_ttft_ms`` below it) would otherwise never see
        the request that could correct it back."""
        fits = self.fits(backend_id)
        if fits.duration.observed and self._clock() - fits.last_at > self._forget_s:
            with self._lock:
                fits = self._fits[backend_id] = BackendFits(
                    ttft=Fit(self._window), duration=Fit(self._window)
                )
        return msgspec.structs.replace(
            quote,
            ttft_s=fits.ttft.apply(quote.ttft_s),
            duration_s=fits.duration.apply(quote.duration_s),
            model_ttft_s=quote.ttft_s,
            model_duration_s=quote.duration_s,
        )

    def observe(
        self, backend_id: str, quote: Quote, ttft_s: float | None, duration_s: float
    ) -> None:
        """A request that went as planned: its quote beside its actual times."""
        fits = self.fits(backend_id)
        with self._lock:
            fits.last_at = now = self._clock()
            if ttft_s is not None:
                model = quote.model_ttft_s if quote.model_ttft_s is not None else quote.ttft_s
                fits.ttft.observe(model, quote.ttft_s, ttft_s, now)
            model = (
                quote.model_duration_s if quote.model_duration_s is not None else quote.duration_s
            )
            fits.duration.observe(model, quote.duration_s, duration_s, now)

    def view(self, backend_id: str) -> FitView:
        fits = self.fits(backend_id)
        with self._lock:
            ttft, duration = fits.ttft, fits.duration
            t_err = ttft.error_quantiles()
            d_err = duration.error_quantiles()
            return FitView(
                observed=max(ttft.observed, duration.observed),
                ttft_factor=ttft.factor,
                ttft_offset_s=ttft.offset,
                duration_factor=duration.factor,
                duration_offset_s=duration.offset,
                ttft_error_p50=t_err[0] if t_err else None,
                ttft_error_p90=t_err[1] if t_err else None,
                duration_error_p50=d_err[0] if d_err else None,
                duration_error_p90=d_err[1] if d_err else None,
            )

    def known(self) -> Iterator[str]:
        return iter(sorted(self._fits))


class CalibratedCost:
    """A backend's cost whose quotes carry the learned correction (what the router uses)."""

    def __init__(self, backend_id: str, cost: BackendCost, calibration: QuoteCalibration) -> None:
        self._id = backend_id
        self._cost = cost
        self._calibration = calibration

    def quote(self, shape: RequestShape, status: BackendStatus) -> Quote:
        return self._calibration.correct(self._id, self._cost.quote(shape, status))

    def begin(self, request_id: str, prompt_tokens: int, at: float | None = None) -> Metering:
        return self._cost.begin(request_id, prompt_tokens, at)


def calibrated(
    costs: Mapping[str, BackendCost], calibration: QuoteCalibration
) -> dict[str, BackendCost]:
    return {bid: CalibratedCost(bid, cost, calibration) for bid, cost in costs.items()}
