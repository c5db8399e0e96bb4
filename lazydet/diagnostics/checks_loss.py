"""Checks over loss / gradient-norm / metric series: pure functions, shared by the hook and tools/diagnose.

A series is a sequence of `(iteration, value)` pairs in iteration order. Each check returns a `Finding`
or None. Thresholds are arguments (defaults mirror `configs/common/doctor.py`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from .findings import Finding

Series = Sequence[tuple[int, float]]


def _arrays(series: Series) -> tuple[np.ndarray, np.ndarray]:
    if len(series) == 0:
        return np.zeros(0), np.zeros(0)
    it, v = zip(*series)
    it, v = np.asarray(it, dtype=np.float64), np.asarray(v, dtype=np.float64)
    keep = np.isfinite(v)
    return it[keep], v[keep]


def rolling_median(values: np.ndarray, window: int) -> np.ndarray:
    """Median of each full window (len(values) - window + 1 entries): robust to single spikes."""
    if len(values) < window:
        return np.zeros(0)
    return np.median(np.lib.stride_tricks.sliding_window_view(values, window), axis=1)


def loss_values(loss_dict: Mapping[str, object]) -> dict[str, float]:
    """The loss terms as floats, with one device sync when they are tensors on one device."""
    values = list(loss_dict.values())
    if values and all(torch.is_tensor(v) for v in values) and len({v.device for v in values}) == 1:
        return dict(zip(loss_dict, torch.stack([v.detach().float().sum() for v in values]).tolist()))
    return {k: float(v) for k, v in loss_dict.items()}


def non_finite_terms(loss_dict: Mapping[str, object]) -> list[str]:
    """Names of the loss terms that are NaN or inf."""
    return [k for k, v in loss_values(loss_dict).items() if not math.isfinite(v)]


def check_non_finite_loss(loss_dict: Mapping[str, object], iteration=None, image_ids=(),
                          note: str | None = None) -> Finding | None:
    """Names the NaN/inf loss terms; `note` (default: the batch's image ids) says where to look."""
    bad = non_finite_terms(loss_dict)
    if not bad:
        return None
    vals = ", ".join(f"{k}={float(loss_dict[k]):.4g}" for k in bad)
    note = note or f"batch image ids: {list(image_ids)}"
    return Finding("non_finite_loss", "error", f"non-finite loss terms: {vals}; {note}", iteration,
                   {"terms": bad, "image_ids": list(image_ids)})


def check_divergence(series: Series, *, window: int = 20, ratio: float = 2.0,
                     min_points: int = 60) -> Finding | None:
    """The smoothed (rolling-median) loss now is `ratio` times above its smoothed minimum."""
    it, v = _arrays(series)
    if len(v) < max(min_points, 2 * window):
        return None
    smooth = rolling_median(v, window)
    lo = int(np.argmin(smooth))
    now = float(smooth[-1])
    best = float(smooth[lo])
    if best > 0 and now > ratio * best and lo < len(smooth) - 1:
        return Finding("divergence", "error",
                       f"smoothed loss {now:.4g} at iter {int(it[-1])} is {now / best:.1f}x its minimum "
                       f"{best:.4g} (iter {int(it[lo + window - 1])}); threshold {ratio}x",
                       int(it[-1]), {"now": now, "min": best})
    return None


def check_grad_explosion(series: Series, *, recent: int = 5, baseline: int = 50,
                         ratio: float = 10.0) -> Finding | None:
    """The median gradient norm of the last `recent` steps is `ratio` times the median before it."""
    it, v = _arrays(series)
    if len(v) < recent + baseline // 2:
        return None
    before = float(np.median(v[-(recent + baseline):-recent]))
    now = float(np.median(v[-recent:]))
    if before > 0 and now > ratio * before:
        return Finding("grad_explosion", "warning",
                       f"grad_norm median {now:.4g} over iters {int(it[-recent])}-{int(it[-1])} is "
                       f"{now / before:.0f}x the median {before:.4g} before", int(it[-1]),
                       {"now": now, "before": before})
    return None


def check_no_learning(series: Series, *, warmup: int = 100, window: int = 50, min_rel_drop: float = 0.05,
                      p_value: float = 0.05) -> Finding | None:
    """After warm-up: the loss has not fallen `min_rel_drop` below its start, and its recent slope is not
    significantly negative (one-sided linear-regression t-test)."""
    it, v = _arrays(series)
    if len(v) < 2 * window or it[-1] < warmup + window:
        return None
    start, recent_it, recent = v[:window], it[-window:], v[-window:]
    drop = 1.0 - float(recent.mean()) / float(start.mean()) if start.mean() != 0 else 0.0
    fit = stats.linregress(recent_it, recent)
    p_falling = fit.pvalue / 2 if fit.slope < 0 else 1.0 - fit.pvalue / 2
    if drop < min_rel_drop and p_falling > p_value:
        return Finding("no_learning", "error",
                       f"mean loss {recent.mean():.4g} over the last {window} logged iters (to {int(it[-1])}) vs "
                       f"{start.mean():.4g} at the start: {100 * drop:.1f}% drop (< {100 * min_rel_drop:.0f}%); "
                       f"recent slope {fit.slope:.3g}/iter, p(falling)={p_falling:.2f}", int(it[-1]),
                       {"drop": drop, "slope": fit.slope})
    return None


def coefficient_of_variation(values: np.ndarray, detrend: bool = True) -> float:
    """std/mean of `values`, after removing a linear trend (a falling loss is not noise)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 3 or values.mean() == 0:
        return 0.0
    resid = values
    if detrend:
        x = np.arange(len(values))
        resid = values - np.polyval(np.polyfit(x, values, 1), x)
    return float(resid.std() / abs(values.mean()))


def is_flat(series: Series, *, min_points: int = 3, rel_tol: float = 0.05, abs_tol: float = 0.5) -> bool:
    """At least `min_points` values, all within max(abs_tol, rel_tol * |mean|) of each other: the series
    never moved (a run that improved and then converged is not flat)."""
    _, v = _arrays(series)
    if len(v) < min_points:
        return False
    return float(v.max() - v.min()) <= max(abs_tol, rel_tol * abs(float(v.mean())))


def check_noisy_flat(train_loss: Series, val_series: Series, *, window: int = 50, cv_threshold: float = 0.25,
                     min_evals: int = 3, val_name: str = "bbox/AP", rel_tol: float = 0.05,
                     abs_tol: float = 0.5) -> Finding | None:
    """High coefficient of variation of the recent train loss while the validation series never moved."""
    it, v = _arrays(train_loss)
    if len(v) < window or not is_flat(val_series, min_points=min_evals, rel_tol=rel_tol, abs_tol=abs_tol):
        return None
    cv = coefficient_of_variation(v[-window:])
    if cv < cv_threshold:
        return None
    _, val = _arrays(val_series)
    return Finding("noisy_flat", "warning",
                   f"train loss CV {cv:.2f} (> {cv_threshold}) over the last {window} logged iters while {val_name} "
                   f"stayed within {val.min():.4g}..{val.max():.4g} over all {len(val)} evaluations",
                   int(it[-1]), {"cv": cv})


def check_metric_at_chance(evals: Series, *, min_evals: int = 3, chance: float = 0.5,
                           name: str = "bbox/AP") -> Finding | None:
    """All of at least `min_evals` evaluations scored below `chance` (AP on the 0-100 scale)."""
    it, v = _arrays(evals)
    if len(v) < min_evals or float(v.max()) >= chance:
        return None
    return Finding("metric_at_chance", "error",
                   f"{name} below {chance} in all {len(v)} evaluations (last {v[-1]:.3g} at iter {int(it[-1])})",
                   int(it[-1]), {"values": v.tolist()})


def run_series_checks(loss: Series, grad_norm: Series, evals: Series, val_loss: Series, settings: dict,
                      max_points: int = 5000) -> list:
    """Every series check with the doctor's settings (`train.doctor`, merged); the hook and tools/diagnose
    share this. The validation side of noisy-flat is the validation loss when logged, else the metric.
    Divergence looks at the last `max_points` points (bounded cost on long runs); the slope test compares
    the first window of the run with the last."""
    s, ls, g, e = settings, settings["loss"], settings["grad"], settings["eval"]
    w = ls["window"]
    head_tail = list(loss) if len(loss) <= 2 * w else list(loss[:w]) + list(loss[-w:])
    found = [
        check_divergence(loss[-max_points:], window=max(w // 2, 1), ratio=ls["divergence_ratio"], min_points=w),
        check_grad_explosion(grad_norm[-max_points:], recent=g["recent"], baseline=g["baseline"],
                             ratio=g["explosion_ratio"]),
        check_no_learning(head_tail, warmup=s["warmup_iters"], window=w, min_rel_drop=ls["no_learning_min_drop"],
                          p_value=ls["no_learning_p_value"]),
        check_metric_at_chance(evals, min_evals=e["min_evals"], chance=e["chance"], name=e["metric"]),
    ]
    use_val_loss = len(val_loss) >= e["min_evals"] and len(val_loss) >= len(evals)
    found.append(check_noisy_flat(
        loss[-max_points:], val_loss if use_val_loss else evals, window=w, cv_threshold=ls["noisy_cv"],
        min_evals=e["min_evals"], val_name="val/total_loss" if use_val_loss else e["metric"],
        rel_tol=e["flat_rel_tol"], abs_tol=0.0 if use_val_loss else e["flat_abs_tol"]))
    return [f for f in found if f is not None]
