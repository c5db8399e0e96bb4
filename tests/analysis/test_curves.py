"""Curve fitting against curves generated from known models with noise."""
import numpy as np
import pytest

from lazydet.analysis.curves import MODELS, CurveFitError, fit_model, forecast, select_model

EPOCHS = np.arange(1, 21, dtype=float)  # 20 evaluations, one per epoch
NOISE = 0.3  # AP points
# Stated tolerance: the epoch-50 forecast of the true model family is within 1.5 AP of the truth (5x the
# noise, 2.5x extrapolation) and the truth lies inside the 95% interval widened by 0.5 AP.
FORECAST_TOL = 1.5

CASES = {
    "power_law": (lambda x: 50 - 40 * x ** -0.7, {"a": 50, "b": 40, "c": 0.7}),
    "logarithmic": (lambda x: 10 + 8 * np.log(x), {"a": 10, "b": 8}),
    "log_linear": (lambda x: 45 - 40 * np.exp(-0.15 * x), {"a": 45, "b": 40, "c": 0.15}),
}


def noisy(fn, seed):
    return fn(EPOCHS) + np.random.default_rng(seed).normal(0, NOISE, len(EPOCHS))


@pytest.mark.parametrize("name", list(CASES))
def test_fit_recovers_parameters(name):
    fn, truth = CASES[name]
    fit = fit_model(MODELS[name], EPOCHS, noisy(fn, 0), y_max=100)
    got = fit.param_dict()
    for k, v in truth.items():
        assert got[k] == pytest.approx(v, rel=0.1), (k, got)
    assert fit.rmse < 2 * NOISE


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_selection_picks_generating_model_and_forecasts_epoch_50(name, seed):
    fn, _ = CASES[name]
    y = noisy(fn, seed)
    sel = select_model(EPOCHS, y, y_max=100)
    assert sel.chosen.name == name, [(s.name, s.heldout_rmse) for s in sel.scores]
    assert {s.name for s in sel.scores} == set(MODELS)  # every model reported with its held-out error
    fc = forecast(sel.chosen.fit, EPOCHS, y, 50, num_samples=100)
    truth = float(fn(50.0))
    assert abs(fc.value - truth) < FORECAST_TOL
    assert fc.low - 0.5 <= truth <= fc.high + 0.5
    assert fc.low <= fc.value <= fc.high


def test_heldout_error_is_computed_without_the_last_points():
    # A curve that bends after the held-out cut: a model fitted on all points would score near zero.
    fn = CASES["power_law"][0]
    y = fn(EPOCHS)
    y[-4:] += 5.0
    sel = select_model(EPOCHS, y, num_heldout=4, y_max=100)
    power = next(s for s in sel.scores if s.name == "power_law")
    # Fitted on the 16 untouched noiseless points, the power law predicts the true curve: error exactly 5.
    assert power.heldout_rmse == pytest.approx(5.0, abs=0.05)


def test_too_few_points_is_a_clear_error():
    with pytest.raises(CurveFitError, match="too few points.*3 evaluations, need at least 6"):
        select_model([1, 2, 3], [1, 2, 3])


def test_non_positive_epochs_rejected():
    with pytest.raises(CurveFitError, match="x must be > 0"):
        select_model(np.arange(0, 10), np.arange(10))
