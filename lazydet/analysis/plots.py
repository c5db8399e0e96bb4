"""PNG plots of training curves and forecasts (matplotlib, headless)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .curves import band  # noqa: E402
from ..utils.writers import is_main_loss  # noqa: E402
from .metrics_io import MetricsError, Run, infer_iters_per_epoch, load_run  # noqa: E402

LOSS_KEY = "total_loss"


def safe_name(metric: str) -> str:
    """bbox/AP -> bbox_AP (for file names)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in metric)


def smooth(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard-style); `weight` in [0, 1)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return np.asarray(out)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_train_loss(run: Run, path: str, key: str = LOSS_KEY, weight: float = 0.9) -> Optional[str]:
    """Training loss per iteration, raw and smoothed; None when the run logged no loss."""
    its, loss = run.series(key)
    if not its:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(its, loss, color="tab:blue", alpha=0.3, lw=0.8, label=f"{key} (raw)")
    ax.plot(its, smooth(loss, weight), color="tab:blue", lw=1.8, label=f"{key} (EMA {weight})")
    ax.set_xlabel("iteration")
    ax.set_ylabel(key)
    if min(loss) > 0 and max(loss) / min(loss) > 20:
        ax.set_yscale("log")
    ax.set_title(f"{run.name}: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_validation(result, path: str) -> str:
    """Validation metric per epoch (the points the forecast uses)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.epochs, result.values, "o-", color="black", ms=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel(result.metric)
    ax.set_title(f"{result.run}: validation {result.metric}")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _mark_heldout(ax, result):
    k = result.selection.num_heldout
    ax.plot(result.epochs[:-k], result.values[:-k], "o", color="black", ms=4, label="fitted points")
    ax.plot(result.epochs[-k:], result.values[-k:], "o", mfc="none", color="red", ms=7, label=f"held-out last {k}")


def plot_fits(result, path: str) -> str:
    """Every model refitted on all points, drawn over the observed range (held-out error in the legend)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    _mark_heldout(ax, result)
    xs = np.linspace(min(result.epochs), max(result.epochs), 200)
    for s in result.selection.scores:
        if s.fit is None:
            continue
        style = "-" if s is result.selection.chosen else "--"
        ax.plot(xs, s.fit(xs), style, lw=1.6, label=f"{s.name}: held-out RMSE {s.heldout_rmse:.3g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(result.metric)
    ax.set_title(f"{result.run}: fits of {result.metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_forecast(result, path: str) -> str:
    """Chosen model extrapolated to the target epoch, its bootstrap band, the others faint, lr drops marked."""
    fc = result.forecast
    chosen = result.selection.chosen.fit
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = np.linspace(min(result.epochs), max(result.target_epoch, max(result.epochs)), 300)
    lo, hi = band(chosen, fc.samples, xs, fc.level)
    ax.fill_between(xs, lo, hi, color="tab:orange", alpha=0.25, label=f"{fc.level:.0%} bootstrap band")
    for s in result.selection.scores:
        if s.fit is not None and s is not result.selection.chosen:
            ax.plot(xs, s.fit(xs), ":", lw=1, alpha=0.7, label=f"{s.name} (not chosen)")
    ax.plot(xs, chosen(xs), "-", color="tab:orange", lw=2, label=f"{chosen.model.name} (chosen)")
    _mark_heldout(ax, result)
    ax.errorbar([fc.x], [fc.value], yerr=[[fc.value - fc.low], [fc.high - fc.value]], fmt="*", ms=12,
                color="tab:red", capsize=4, label=f"epoch {fc.x:g}: {fc.value:.2f} [{fc.low:.2f}, {fc.high:.2f}]")
    for i, d in enumerate(result.lr_drops):
        ax.axvline(d.epoch, color="gray", ls="--", lw=1, label="lr drop" if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel(result.metric)
    ax.set_title(f"{result.run}: {result.metric} forecast" + ("  (see warnings)" if result.warnings else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_forecast_set(result, run: Run, out_dir: str) -> List[str]:
    """The four forecast PNGs for one run into `out_dir` (normally the run's plots/)."""
    m = safe_name(result.metric)
    paths = [
        plot_validation(result, os.path.join(out_dir, f"val_{m}.png")),
        plot_train_loss(run, os.path.join(out_dir, "train_loss.png")),
        plot_fits(result, os.path.join(out_dir, f"fits_{m}.png")),
        plot_forecast(result, os.path.join(out_dir, f"forecast_{m}.png")),
    ]
    return [p for p in paths if p]


def _x_axis(run: Run, its: Sequence[float], use_epochs: bool, ipe_override: Optional[float]):
    if not use_epochs:
        return list(its)
    ipe = ipe_override or infer_iters_per_epoch(run)
    return [(i + 1.0) / ipe for i in its]


def plot_runs(runs: Sequence[Run], path: str, metrics: Sequence[str] = ("bbox/AP", "bbox/AP50"),
              loss_key: str = LOSS_KEY, weight: float = 0.9, iters_per_epoch: Optional[float] = None) -> str:
    """Training loss, lr and validation metrics of several runs side by side in one figure."""
    use_epochs = bool(iters_per_epoch) or all(infer_iters_per_epoch(r) for r in runs)
    xlabel = "epoch" if use_epochs else "iteration"
    panels = [(loss_key, True), ("lr", False)] + [(m, False) for m in metrics]
    panels = [(k, s) for k, s in panels if any(r.series(k)[0] for r in runs)]
    if not panels:
        raise ValueError(f"none of {[p[0] for p in panels] or [loss_key, 'lr', *metrics]} were logged by these runs")
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, smoothed) in zip(axes.flat, panels):
        for i, run in enumerate(runs):
            its, ys = run.series(key)
            if not its:
                continue
            xs = _x_axis(run, its, use_epochs, iters_per_epoch)
            c = colors[i % len(colors)]
            if smoothed:
                ax.plot(xs, ys, color=c, alpha=0.2, lw=0.7)
                ax.plot(xs, smooth(ys, weight), color=c, lw=1.6, label=run.name)
            else:
                ax.plot(xs, ys, "o-" if len(xs) < 40 else "-", color=c, ms=3, lw=1.4, label=run.name)
        ax.set_title(key + (f" (raw + EMA {weight})" if smoothed else ""))
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _save(fig, path)


def plot_run_folder(output_dir: str, metrics: Sequence[str] = ("bbox/AP", "bbox/AP50")) -> Optional[str]:
    """`<output_dir>/plots/metrics.png` from the run's metrics.json, as `tools.plot_metrics` draws it: total
    loss, lr, each main loss term and `metrics` (BoxAP). Returns the path, or None when nothing was logged.
    Drawn by train_net's run folder when a run ends or is stopped."""
    try:
        run = load_run(output_dir)
    except MetricsError:
        return None
    terms = [k for k in run.metric_names() if is_main_loss(k) and k != "total_loss"]
    return plot_runs([run], os.path.join(output_dir, "plots", "metrics.png"), [*terms, *metrics])
