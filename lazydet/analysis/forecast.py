"""Forecast a run's validation metric at a target epoch, and say when not to trust the forecast.

Pipeline: metrics.json -> (epochs, metric) -> every curve model fitted and scored on held-out last points
(`curves.select_model`) -> the chosen model's value at the target epoch with a bootstrap interval ->
warnings about learning-rate drops, which break the smooth-curve assumption:

* a drop *inside* the observed range lifts the points after it in one step; a smooth model reads that
  jump as a trend and carries it forward, so the forecast is likely **optimistic**;
* a drop *between* the last observation and the target (e.g. the 50-epoch recipe drops at epoch 40) will
  lift the real curve, which the fit cannot know, so the forecast is likely **pessimistic**.

Drops come from the logged `lr` series, from the run's saved recipe (`config.yaml`, the lr multiplier's
milestones) and from the user (`lr_drop_epochs`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence

import numpy as np

from .curves import MODELS, Forecast, Selection, forecast, select_model
from .metrics_io import MetricsError, Run, infer_iters_per_epoch, to_epochs

DROP_RATIO = 0.5  # a step that at least halves the lr counts as a drop (cosine decay between logs does not)


@dataclass
class LrDrop:
    """A learning-rate drop at `epoch`, found in the logged lr, the recipe's schedule or given by the user
    (`source`); `factor` is new lr / old lr when known. The fit cannot foresee the jump such a drop causes."""

    epoch: float
    source: str  # "logged lr", "recipe", "user"
    factor: Optional[float] = None  # new lr / old lr when known


@dataclass
class ForecastResult:
    """Everything one forecast of `metric` for `run` used and produced: the observed (epoch, value) points,
    the model selection, the forecast at `target_epoch`, the lr drops and the warnings they raise."""

    run: str
    metric: str
    epochs: List[float]
    values: List[float]
    selection: Selection
    forecast: Forecast
    target_epoch: float
    lr_drops: List[LrDrop] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready summary (no arrays): the inputs' extent, every candidate model (parameters, held-out
        error, its own forecast), the chosen one, the forecast with its interval, lr drops and warnings."""
        return {
            "run": self.run,
            "metric": self.metric,
            "target_epoch": self.target_epoch,
            "num_points": len(self.epochs),
            "last_epoch": self.epochs[-1],
            "last_value": self.values[-1],
            "num_heldout": self.selection.num_heldout,
            "chosen_model": self.selection.chosen.name,
            "forecast": self.forecast.value,
            "interval": [self.forecast.low, self.forecast.high],
            "interval_level": self.forecast.level,
            "models": [
                {
                    "name": s.name,
                    "formula": MODELS[s.name].formula,
                    "heldout_rmse": s.heldout_rmse if math.isfinite(s.heldout_rmse) else None,
                    "params": s.fit.param_dict() if s.fit else None,
                    "forecast": float(s.fit(self.target_epoch)) if s.fit else None,
                    "error": s.error or None,
                }
                for s in self.selection.scores
            ],
            "lr_drops": [d.__dict__ for d in self.lr_drops],
            "warnings": self.warnings,
        }


def logged_lr_drops(run: Run, iters_per_epoch: float, ratio: float = DROP_RATIO) -> List[LrDrop]:
    """Step drops in the logged `lr` series (consecutive logged values falling by at least 1/ratio)."""
    its, lrs = run.series("lr")
    drops = []
    for (i0, lr0), (i1, lr1) in zip(zip(its, lrs), zip(its[1:], lrs[1:])):
        if lr0 > 0 and lr1 < ratio * lr0:
            drops.append(LrDrop((i1 + 1.0) / iters_per_epoch, "logged lr", lr1 / lr0))
    return drops


def _find_step_schedules(node) -> Iterable[tuple]:
    """Yield (steps, schedule length, factors) from scheduler nodes of a loaded config tree.

    Understands lazydet's `multistep_multiplier(max_iter, steps, gamma)` and fvcore's
    `MultiStepParamScheduler(values, milestones, num_updates)`.
    """
    if isinstance(node, dict):
        if isinstance(node.get("steps"), list):
            gamma = node.get("gamma", 0.1)
            yield node["steps"], node.get("max_iter"), [gamma] * len(node["steps"])
        elif isinstance(node.get("milestones"), list):
            values = node.get("values")
            factors = [None] * len(node["milestones"])
            if isinstance(values, list):
                factors = [values[i + 1] / values[i] if i + 1 < len(values) and values[i] else None
                           for i in range(len(node["milestones"]))]
            yield node["milestones"], node.get("num_updates"), factors
        for v in node.values():
            yield from _find_step_schedules(v)
    elif isinstance(node, list):
        for v in node:
            yield from _find_step_schedules(v)


def recipe_lr_drops(output_dir: str, iters_per_epoch: float) -> List[LrDrop]:
    """Drops scheduled by the run's saved recipe (config.yaml `lr_multiplier`).

    The engine applies the multiplier at the fraction iteration / train.max_iter, so a step at `s` of a
    schedule of length `L` happens at iteration s / L * train.max_iter (just `s` when L is not given).
    """
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return []
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    except (yaml.YAMLError, OSError):
        return []
    if not isinstance(cfg, dict):
        return []
    train_max_iter = (cfg.get("train") or {}).get("max_iter") if isinstance(cfg.get("train"), dict) else None
    drops = []
    for steps, length, factors in _find_step_schedules(cfg.get("lr_multiplier", {})):
        for step, factor in zip(steps, factors):
            if not isinstance(step, (int, float)) or (factor is not None and factor >= 1):
                continue
            it = float(step)
            if isinstance(length, (int, float)) and length > 0 and isinstance(train_max_iter, (int, float)):
                it = step / length * train_max_iter
            drops.append(LrDrop(it / iters_per_epoch, "recipe", None if factor is None else float(factor)))
    return drops


def _merge_drops(drops: Sequence[LrDrop], tolerance: float) -> List[LrDrop]:
    """One entry per drop when several sources report it (within `tolerance` epochs)."""
    merged: List[LrDrop] = []
    for d in sorted(drops, key=lambda d: d.epoch):
        if merged and abs(merged[-1].epoch - d.epoch) <= tolerance:
            prev = merged[-1]
            if d.source not in prev.source:
                prev.source += f" + {d.source}"
            prev.factor = prev.factor or d.factor
            continue
        merged.append(LrDrop(d.epoch, d.source, d.factor))
    return merged


def lr_drop_warnings(drops: Sequence[LrDrop], first_epoch: float, last_epoch: float, target_epoch: float) -> List[str]:
    """One warning per lr drop that biases the forecast: inside the observed epochs (the fit reads the jump
    as a trend: optimistic) or between the last observation and the target (a jump no fit can see:
    pessimistic). Drops outside both ranges say nothing."""
    out = []
    for d in drops:
        what = f"lr drop at epoch {d.epoch:.3g} ({d.source}{'' if d.factor is None else f', x{d.factor:.3g}'})"
        if first_epoch < d.epoch <= last_epoch:
            out.append(
                f"{what} is inside the observed range: the fit treats the one-off jump after it as a trend, "
                f"so the forecast is likely OPTIMISTIC (fit only one lr phase with --min-epoch/--max-epoch)"
            )
        elif last_epoch < d.epoch <= target_epoch:
            out.append(
                f"{what} lies between the last observation (epoch {last_epoch:.3g}) and the target "
                f"{target_epoch:g}: the curve will jump there, which no fit can see, so the forecast is likely PESSIMISTIC"
            )
    return out


def forecast_run(run: Run, metric: str = "bbox/AP", target_epoch: float = 50.0,
                 iters_per_epoch: Optional[float] = None, lr_drop_epochs: Sequence[float] = (),
                 min_epoch: Optional[float] = None, max_epoch: Optional[float] = None,
                 num_heldout: Optional[int] = None, level: float = 0.95, num_samples: int = 300,
                 y_max: Optional[float] = None) -> ForecastResult:
    """Fit, select, forecast and warn for one run's `metric`."""
    its, values = run.series(metric)
    if not its:
        available = ", ".join(n for n in run.metric_names() if "/" in n) or "none"
        raise MetricsError(f"{run.path}: no '{metric}' values (evaluation metrics present: {available}); pick one with --metric")
    ipe = iters_per_epoch or infer_iters_per_epoch(run)
    epochs = to_epochs(run, its, ipe)
    keep = [(e, v) for e, v in zip(epochs, values)
            if (min_epoch is None or e >= min_epoch) and (max_epoch is None or e <= max_epoch)]
    if not keep:
        raise MetricsError(f"{run.path}: no '{metric}' values between --min-epoch and --max-epoch")
    epochs, values = [e for e, _ in keep], [v for _, v in keep]
    if y_max is None and metric.startswith("bbox/"):
        y_max = 100.0  # COCO AP is a percentage
    selection = select_model(epochs, values, num_heldout=num_heldout, y_max=y_max, what=f"'{metric}' of {run.name}")
    fc = forecast(selection.chosen.fit, epochs, values, target_epoch, level=level, num_samples=num_samples, y_max=y_max)
    drops = logged_lr_drops(run, ipe) + recipe_lr_drops(run.output_dir, ipe)
    drops += [LrDrop(float(e), "user") for e in lr_drop_epochs]
    spacing = max(1.0 / ipe, float(np.median(np.diff(epochs))) if len(epochs) > 1 else 1.0)
    drops = _merge_drops(drops, tolerance=spacing)
    warns = lr_drop_warnings(drops, epochs[0], epochs[-1], target_epoch)
    if target_epoch > 4 * epochs[-1]:
        warns.append(f"target epoch {target_epoch:g} is {target_epoch / epochs[-1]:.1f}x the last observed epoch "
                     f"{epochs[-1]:.3g}: the interval covers noise, not the choice of curve; compare the models' forecasts")
    return ForecastResult(run.name, metric, epochs, values, selection, fc, float(target_epoch), drops, warns)


def format_report(result: ForecastResult) -> str:
    """Human-readable summary: every model's held-out error and forecast, the choice, the warnings."""
    d = result.to_dict()
    lines = [
        f"run {d['run']}: {d['metric']} at epoch {d['target_epoch']:g} "
        f"(from {d['num_points']} points up to epoch {d['last_epoch']:.3g}, last value {d['last_value']:.3f}; "
        f"last {d['num_heldout']} held out)",
        "| model | formula | held-out RMSE | params | forecast |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m in d["models"]:
        mark = " (chosen)" if m["name"] == d["chosen_model"] else ""
        err = "failed: " + m["error"] if m["error"] else f"{m['heldout_rmse']:.4g}"
        params = ", ".join(f"{k}={v:.4g}" for k, v in (m["params"] or {}).items())
        fc = "-" if m["forecast"] is None else f"{m['forecast']:.3f}"
        lines.append(f"| {m['name']}{mark} | {m['formula']} | {err} | {params} | {fc} |")
    lo, hi = d["interval"]
    lines.append(f"forecast {d['forecast']:.3f}  [{lo:.3f}, {hi:.3f}] ({d['interval_level']:.0%} bootstrap interval, "
                 f"model {d['chosen_model']})")
    lines += [f"WARNING: {w}" for w in d["warnings"]]
    return "\n".join(lines)
