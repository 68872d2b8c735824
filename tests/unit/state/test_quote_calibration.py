"""The learned correction of quoted times (gateway.state.quotes): what it learns from
(model, actual) pairs, how it corrects the next quotes, its bounded memory, and the error
it reports."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.backend import BackendStatus
from gateway.cost import Metering, Quote, RequestShape
from gateway.state.quotes import (
    FACTOR_BOUNDS,
    FIRST_FITS,
    MIN_REFIT_S,
    REFIT_EVERY,
    WINDOW,
    CalibratedCost,
    Fit,
    QuoteCalibration,
    _error,
)


def quote(ttft_s: float, duration_s: float | None = None) -> Quote:
    return Quote(
        joules=1.0,
        usd_energy=1e-6,
        usd_capex=1e-6,
        usd_list=0.0,
        ttft_s=ttft_s,
        duration_s=ttft_s * 2 if duration_s is None else duration_s,
    )


def test_a_fresh_fit_changes_nothing() -> None:
    fit = Fit()
    assert (fit.factor, fit.offset) == (1.0, 0.0)
    assert fit.apply(0.3) == 0.3
    assert fit.error_quantiles() is None


def test_it_learns_a_slower_machine() -> None:
    """Actual = 3 x model + 40 ms (a CPU three times slower than calibrated, plus the
    gateway's overhead), with a little noise: the next quotes come within a few percent."""
    rng = random.Random(7)
    fit = Fit()
    for _ in range(WINDOW):
        model = rng.uniform(0.05, 2.0)
        actual = 3 * model + 0.040 + rng.gauss(0, 0.005)
        fit.observe(model, fit.apply(model), actual)
    assert fit.offset == 0.0
    assert fit.apply(1.0) == pytest.approx(3.04, rel=0.03)
    assert fit.apply(0.2) == pytest.approx(0.64, rel=0.1)


def test_it_learns_a_fixed_overhead() -> None:
    """Actual = model + 30 ms (the gateway's own time), quotes from idle to loaded."""
    fit = Fit()
    for i in range(WINDOW):
        model = 0.01 + 0.1 * i
        fit.observe(model, fit.apply(model), model + 0.030)
    assert (fit.factor, fit.offset) == (1.0, pytest.approx(0.030))
    assert fit.apply(0.005) == pytest.approx(0.035)


def test_one_odd_request_does_not_move_it() -> None:
    fit = Fit()
    for i in range(WINDOW - 1):
        model = 0.1 + 0.05 * i
        fit.observe(model, model, model)
    fit.observe(0.5, 0.5, 30.0)  # a request stuck behind something the model never saw
    assert fit.factor == pytest.approx(1.0, abs=0.01)
    assert fit.offset == pytest.approx(0.0, abs=0.01)


def test_quotes_too_alike_keep_the_factor_and_learn_the_offset() -> None:
    """An idle backend: every quote is the same prefill; the actual is 25 ms more."""
    fit = Fit()
    for _ in range(10):
        fit.observe(0.010, 0.010, 0.035)
    assert fit.factor == 1.0
    assert fit.offset == pytest.approx(0.025)


def test_the_scale_is_bounded_and_a_shift_takes_over() -> None:
    """Quotes a hundred times too short: no scale past the bound; the shift corrects."""
    fit = Fit()
    for i in range(WINDOW):
        fit.observe(1.0 + 0.01 * i, 0.0, 100.0 * (1.0 + 0.01 * i))
    assert fit.factor == 1.0 < FACTOR_BOUNDS[1]
    assert fit.apply(1.05) == pytest.approx(105.0, rel=0.05)


def test_memory_is_bounded_and_old_requests_are_forgotten() -> None:
    fit = Fit(window=8)
    for i in range(8):
        fit.observe(0.1 * (i + 1), 0.0, 0.2 * (i + 1))  # twice as slow
    assert fit.factor == pytest.approx(2.0)
    for i in range(100):
        fit.observe(0.1 * (i % 8 + 1), 0.0, 0.1 * (i % 8 + 1))  # back to the profile's pace
    assert len(fit.pairs) == 8
    assert len(fit.errors) == 8
    assert fit.factor == pytest.approx(1.0)


def test_errors_are_of_the_quote_as_given() -> None:
    fit = Fit()
    for quoted, actual in [(1.0, 1.0), (0.9, 1.0), (1.5, 1.0), (1.0, 2.0)]:
        fit.observe(quoted, quoted, actual)
    p50, p90 = fit.error_quantiles() or (None, None)
    assert p50 == pytest.approx(0.5)  # sorted: 0, 0.1, 0.5, 0.5
    assert p90 == pytest.approx(0.5)


class Slow:
    """A cost model that quotes 0.1 s to the first token and 0.5 s in all."""

    def quote(self, shape: RequestShape, status: BackendStatus) -> Quote:
        return quote(0.1, 0.5)

    def begin(self, request_id: str, prompt_tokens: int, at: float | None = None) -> Metering:
        raise NotImplementedError


def test_calibrated_quotes_keep_the_models_figures_and_learn_per_backend() -> None:
    calibration = QuoteCalibration()
    cost = CalibratedCost("a", Slow(), calibration)
    other = CalibratedCost("b", Slow(), calibration)
    shape = RequestShape(prompt_tokens=10, output_tokens=10)
    status = BackendStatus(healthy=True)
    first = cost.quote(shape, status)
    assert (first.ttft_s, first.model_ttft_s, first.duration_s) == (0.1, 0.1, 0.5)
    for _ in range(5):  # every request on "a" took 0.2 s more than quoted
        calibration.observe("a", cost.quote(shape, status), ttft_s=0.3, duration_s=0.7)
    corrected = cost.quote(shape, status)
    assert corrected.ttft_s == pytest.approx(0.3)
    assert corrected.duration_s == pytest.approx(0.7)
    assert corrected.model_ttft_s == 0.1  # the model's own figure, for the next fit
    assert other.quote(shape, status).ttft_s == 0.1  # "b" learned nothing
    view = calibration.view("a")
    assert view.observed == 5
    assert view.ttft_offset_s == pytest.approx(0.2)
    assert view.ttft_error_p90 == pytest.approx(2 / 3)  # the first quote was 0.1 for 0.3
    assert view.ttft_error_p50 == pytest.approx(0.0, abs=1e-9)
    assert list(calibration.known()) == ["a", "b"]


def test_a_request_without_a_first_token_teaches_only_the_duration() -> None:
    calibration = QuoteCalibration()
    calibration.observe("a", quote(0.1, 0.5), ttft_s=None, duration_s=1.0)
    view = calibration.view("a")
    assert view.ttft_error_p50 is None
    assert view.duration_offset_s == pytest.approx(0.5)


def test_quotes_too_long_by_a_share_are_scaled_not_shifted() -> None:
    """Every quote 25 % too long, all alike: a shift would take a short quote to nothing."""
    fit = Fit()
    for _ in range(10):
        fit.observe(0.8, 0.8, 0.6)
    assert (fit.factor, fit.offset) == (pytest.approx(0.75), 0.0)
    assert fit.apply(0.1) == pytest.approx(0.075)  # an idle backend's quote stays a quote


def test_a_backend_priced_out_of_every_request_is_quoted_afresh_after_a_while() -> None:
    """Its corrected quote is over every client's max_ttft_ms, so it gets no request, so
    nothing corrects it back: after FORGET_S without a finished request, the model's
    quote again (the replay found GPUs locked out for the rest of a run)."""
    now = [0.0]
    calibration = QuoteCalibration(clock=lambda: now[0], forget_s=60.0)
    cost = CalibratedCost("gpu", Slow(), calibration)
    shape = RequestShape(prompt_tokens=10, output_tokens=10)
    status = BackendStatus(healthy=True)
    for _ in range(8):  # a bad spell: every first token 2.5 s late
        now[0] += 1.0
        calibration.observe("gpu", cost.quote(shape, status), ttft_s=2.6, duration_s=3.0)
    assert cost.quote(shape, status).ttft_s == pytest.approx(2.6)
    now[0] += 59.0  # no request since: the correction holds a while
    assert cost.quote(shape, status).ttft_s == pytest.approx(2.6)
    now[0] += 2.0
    afresh = cost.quote(shape, status)
    assert afresh.ttft_s == 0.1
    assert afresh.duration_s == 0.5
    assert calibration.view("gpu").observed == 0


def test_fits_come_at_most_once_every_min_refit_s() -> None:
    """A busy backend's fit is redone at most once every MIN_REFIT_S (of the calibration's
    clock), and the next fit after a pause takes every request since into account."""
    fit = Fit()
    for _ in range(FIRST_FITS):
        fit.observe(1.0, 1.0, 1.0, now=0.0)
    assert fit.factor == 1.0
    assert fit.offset == 0.0
    # Sixteen requests 0.5 s late, all within the same instant: one fit, at the first
    # REFIT_EVERY, then none until MIN_REFIT_S has passed.
    for _ in range(16):
        fit.observe(1.0, 1.0, 1.5, now=1.0)
    after_one = (fit.factor, fit.offset)
    assert after_one != (1.0, 0.5)  # the window's median moved later than the one fit
    fit.observe(1.0, 1.0, 1.5, now=1.0 + MIN_REFIT_S)
    for _ in range(REFIT_EVERY - 1):
        fit.observe(1.0, 1.0, 1.5, now=1.0 + MIN_REFIT_S)
    assert fit.apply(1.0) == pytest.approx(1.5)


def test_durations_alone_are_learned_and_forgotten() -> None:
    """Answers that came whole (no TTFT seen): only the duration is learned, and that
    correction too is forgotten after FORGET_S without a finished request."""
    now = [0.0]
    calibration = QuoteCalibration(clock=lambda: now[0], forget_s=60.0)
    cost = CalibratedCost("api", Slow(), calibration)
    shape = RequestShape(prompt_tokens=10, output_tokens=10)
    status = BackendStatus(healthy=True)
    for _ in range(8):
        now[0] += 1.0
        calibration.observe("api", cost.quote(shape, status), ttft_s=None, duration_s=2.0)
    corrected = cost.quote(shape, status)
    assert corrected.ttft_s == 0.1  # nothing learned of the first token
    assert corrected.duration_s == pytest.approx(2.0)
    view = calibration.view("api")
    assert view.ttft_error_p50 is None
    assert view.duration_error_p50 is not None
    now[0] += 61.0
    assert cost.quote(shape, status).duration_s == 0.5


def _plain_error(pairs: list[tuple[float, float]], factor: float, offset: float) -> float:
    """The fit's error as the module describes it: the median relative error of
    ``max(0, factor x model + offset)`` over the window (statistics.median)."""
    return statistics.median(
        [abs(y - max(0.0, factor * x + offset)) / y if y > 0 else 0.0 for x, y in pairs]
    )


_finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@given(
    pairs=st.lists(st.tuples(_finite, _finite), min_size=1, max_size=WINDOW),
    offset=_finite,
    factor=st.floats(min_value=FACTOR_BOUNDS[0], max_value=FACTOR_BOUNDS[1]),
)
def test_the_fits_errors_are_the_plain_formulas(
    pairs: list[tuple[float, float]], offset: float, factor: float
) -> None:
    """The two errors a fit compares, written for speed, are exactly the formula's."""
    assert _error(pairs, 1.0, offset) == _plain_error(pairs, 1.0, offset)
    assert _error(pairs, factor, 0.0) == _plain_error(pairs, factor, 0.0)
