"""Learning-curve models, fitting, held-out model selection and forecast intervals.

Three families are fitted to a validation metric y (e.g. bbox/AP) against epochs x > 0:

* ``logarithmic``  y = a + b ln x. Never saturates; a straight line on a log-x axis.
* ``log_linear``   y = a - b exp(-c x). Log-linear in the *gap to the asymptote*: ln(a - y) = ln b - c x.
  We use this instead of "ln y linear in x" because that form is exponential growth, unbounded, and a
  detection AP (bounded by 100, concave in epochs) never follows it; the gap form keeps the straight line
  in (x, log) coordinates but saturates at ``a``.
* ``power_law``    y = a - b x^(-c). Saturating power law, the usual scaling-law shape; it tends to the
  logarithmic model as c -> 0, so it is the most flexible of the three.

The model is chosen by the error on the last (held-out) points of a fit made without them, preferring the
model with fewer parameters when errors are within ``tie_tolerance``. The interval is a residual bootstrap
of the chosen model refitted on all points: it covers noise and parameter uncertainty, not a change of regime
(an lr drop), which the forecast tool warns about separately.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit


class CurveFitError(ValueError):
    """Too few points or unusable data for fitting; the message is one actionable line."""


@dataclass(frozen=True)
class CurveModel:
    """A learning-curve family y(x) (x in epochs, > 0): `fn(x, *params)` vectorised over x, the names of its
    parameters, `initial_guess(x, y) -> p0` and `bounds(x, y, y_max) -> (lower, upper)` for `curve_fit`."""

    name: str
    formula: str
    param_names: Tuple[str, ...]
    fn: Callable
    initial_guess: Callable  # (x, y) -> p0
    bounds: Callable  # (x, y, y_max) -> (lower, upper)

    @property
    def num_params(self) -> int:
        """Number of free parameters (what parsimony counts when held-out errors tie)."""
        return len(self.param_names)


def _logarithmic(x, a, b):
    return a + b * np.log(x)


def _log_linear(x, a, b, c):
    return a - b * np.exp(-c * x)


def _power_law(x, a, b, c):
    return a - b * np.power(x, -c)


def _asymptote_guess(y):
    span = float(np.ptp(y)) or max(abs(float(np.max(y))), 1.0)
    return float(np.max(y)) + 0.25 * span if y[-1] >= y[0] else float(np.min(y)) - 0.25 * span


def _log_p0(x, y):
    b, a = np.polyfit(np.log(x), y, 1)
    return [a, b]


def _log_linear_p0(x, y):
    a = _asymptote_guess(y)
    gap = np.abs(a - y) + 1e-9
    slope, intercept = np.polyfit(x, np.log(gap), 1)
    c = max(-slope, 1e-3 / max(float(np.max(x)), 1e-9))
    b = math.copysign(math.exp(intercept), a - y[0])
    return [a, b, c]


def _power_p0(x, y):
    a = _asymptote_guess(y)
    gap = np.abs(a - y) + 1e-9
    slope, intercept = np.polyfit(np.log(x), np.log(gap), 1)
    c = float(np.clip(-slope, 0.05, 3.0))
    b = math.copysign(math.exp(intercept), a - y[0])
    return [a, b, c]


def _unbounded(x, y, y_max):
    return [-np.inf, -np.inf], [np.inf, np.inf]


def _saturating_bounds(c_max_fn):
    def bounds(x, y, y_max):
        a_hi = np.inf if y_max is None else float(y_max)
        return [-np.inf, -np.inf, 1e-6], [a_hi, np.inf, c_max_fn(x)]

    return bounds


MODELS: Dict[str, CurveModel] = {
    m.name: m
    for m in (
        CurveModel("logarithmic", "a + b*ln(x)", ("a", "b"), _logarithmic, _log_p0, _unbounded),
        # c above ~50/x_max would reach the asymptote within the first observed point: not a curve any more.
        CurveModel("log_linear", "a - b*exp(-c*x)", ("a", "b", "c"), _log_linear, _log_linear_p0,
                   _saturating_bounds(lambda x: 50.0 / float(np.max(x)))),
        CurveModel("power_law", "a - b*x^(-c)", ("a", "b", "c"), _power_law, _power_p0,
                   _saturating_bounds(lambda x: 5.0)),
    )
}


@dataclass
class Fit:
    """A fitted `model` with its `params` [P]; calling it evaluates the curve at x (scalar or array).
    `rmse` is on the points it was fitted to."""

    model: CurveModel
    params: np.ndarray
    rmse: float  # on the points it was fitted to

    def __call__(self, x):
        return self.model.fn(np.asarray(x, dtype=float), *self.params)

    def param_dict(self) -> Dict[str, float]:
        """{parameter name: fitted value}, for reports."""
        return {k: float(v) for k, v in zip(self.model.param_names, self.params)}


def fit_model(model: CurveModel, x, y, y_max: Optional[float] = None, p0=None) -> Fit:
    """Least-squares fit of one model (scipy curve_fit, trust-region with bounds)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < model.num_params:
        raise CurveFitError(f"{model.name} needs at least {model.num_params} points, got {len(x)}")
    lower, upper = model.bounds(x, y, y_max)
    start = np.asarray(p0 if p0 is not None else model.initial_guess(x, y), dtype=float)
    start = np.clip(start, np.asarray(lower) + 1e-9, np.asarray(upper) - 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        params, _ = curve_fit(model.fn, x, y, p0=start, bounds=(lower, upper), maxfev=20000)
    pred = model.fn(x, *params)
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    return Fit(model, params, rmse)


@dataclass
class ModelScore:
    """One candidate model in `select_model`: its error on the held-out last points (inf when the early
    fit failed, `error` then says why) and its refit on all points."""

    name: str
    heldout_rmse: float  # inf when the fit failed
    fit: Optional[Fit]  # fit on ALL points (None when it failed)
    error: str = ""


@dataclass
class Selection:
    """`select_model`'s result: every candidate's score, the chosen one and how many last points were held
    out to score them."""

    scores: List[ModelScore]
    chosen: ModelScore
    num_heldout: int


def min_points(models: Sequence[CurveModel], num_heldout: int) -> int:
    """A model needs one more training point than parameters so its held-out error means something."""
    return max(m.num_params for m in models) + 1 + num_heldout


def default_num_heldout(n: int) -> int:
    """Points held out from `n` to score extrapolation: 20% of them, at least 2."""
    return max(2, int(round(0.2 * n)))


def select_model(x, y, models: Optional[Sequence[CurveModel]] = None, num_heldout: Optional[int] = None,
                 y_max: Optional[float] = None, tie_tolerance: float = 0.10, what: str = "the metric") -> Selection:
    """Fit every model without the last points, score on them, and refit every model on all points."""
    models = list(models or MODELS.values())
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if np.any(x <= 0):
        raise CurveFitError(f"x must be > 0 for {what} (epochs); got {float(np.min(x))}")
    k = num_heldout if num_heldout is not None else default_num_heldout(len(x))
    need = min_points(models, k)
    if len(x) < need:
        raise CurveFitError(
            f"too few points to forecast {what}: {len(x)} evaluations, need at least {need} "
            f"({k} held out + {need - k} to fit); evaluate more often (train.eval_period) or wait for more"
        )
    order = np.argsort(x)
    x, y = x[order], y[order]
    scores = []
    for model in models:
        try:
            early = fit_model(model, x[:-k], y[:-k], y_max)
            err = float(np.sqrt(np.mean((early(x[-k:]) - y[-k:]) ** 2)))
            full = fit_model(model, x, y, y_max, p0=early.params)
            scores.append(ModelScore(model.name, err if math.isfinite(err) else math.inf, full))
        except (RuntimeError, ValueError, CurveFitError) as e:
            scores.append(ModelScore(model.name, math.inf, None, error=str(e).splitlines()[0]))
    usable = [s for s in scores if math.isfinite(s.heldout_rmse) and s.fit is not None]
    if not usable:
        raise CurveFitError(f"no model could be fitted to {what}: " + "; ".join(f"{s.name}: {s.error}" for s in scores))
    best = min(s.heldout_rmse for s in usable)
    # Parsimony: among models within tolerance of the best held-out error, take the one with fewest params.
    close = [s for s in usable if s.heldout_rmse <= best * (1 + tie_tolerance) + 1e-12]
    chosen = min(close, key=lambda s: (s.fit.model.num_params, s.heldout_rmse))
    return Selection(scores, chosen, k)


@dataclass
class Forecast:
    """The fit's value at `x` with a bootstrap interval [low, high] at `level` (e.g. 0.95); `samples` are the
    bootstrap parameter sets [S, P], kept to draw bands."""

    x: float
    value: float
    low: float
    high: float
    level: float
    samples: np.ndarray = field(repr=False, default=None)  # bootstrap parameter sets, for bands


def bootstrap_params(fit: Fit, x, y, num_samples: int = 300, seed: int = 0, y_max: Optional[float] = None) -> np.ndarray:
    """Residual bootstrap: refit the model on (fitted + resampled residuals); returns [S, P] parameters."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    fitted = fit(x)
    resid = y - fitted
    # Scale residuals up for the degrees of freedom the fit used (else the spread is underestimated).
    dof = max(len(x) - fit.model.num_params, 1)
    resid = resid * math.sqrt(len(x) / dof)
    samples = []
    for _ in range(num_samples):
        y_star = fitted + rng.choice(resid, size=len(resid), replace=True)
        try:
            samples.append(fit_model(fit.model, x, y_star, y_max, p0=fit.params).params)
        except (RuntimeError, ValueError):
            continue
    if not samples:
        return fit.params[None, :]
    return np.asarray(samples)


def forecast(fit: Fit, x, y, target_x: float, level: float = 0.95, num_samples: int = 300, seed: int = 0,
             y_max: Optional[float] = None) -> Forecast:
    """Point forecast of the fit at `target_x` and a bootstrap interval at `level`."""
    samples = bootstrap_params(fit, x, y, num_samples, seed, y_max)
    preds = np.array([fit.model.fn(float(target_x), *p) for p in samples])
    preds = preds[np.isfinite(preds)]
    tail = (1 - level) / 2 * 100
    low, high = (np.percentile(preds, [tail, 100 - tail]) if len(preds) else (np.nan, np.nan))
    value = float(fit(float(target_x)))
    return Forecast(float(target_x), value, float(min(low, value)), float(max(high, value)), level, samples)


def band(fit: Fit, samples: np.ndarray, xs, level: float = 0.95) -> Tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the bootstrap curves over xs (for plots)."""
    xs = np.asarray(xs, dtype=float)
    curves = np.stack([fit.model.fn(xs, *p) for p in samples])
    tail = (1 - level) / 2 * 100
    return np.nanpercentile(curves, tail, axis=0), np.nanpercentile(curves, 100 - tail, axis=0)
