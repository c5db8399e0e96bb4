"""Short experiments on a recipe, behind tools/overfit_batch and tools/lr_find: one fixed batch trained to
(near) zero loss, and a learning-rate range test. Both run the recipe's real model, optimizer and data."""
from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from .preflight import GroundTruthAsPredictions

logger = logging.getLogger("lazydet.doctor")


def build_parts(config_file: str, overrides=(), device: str | None = None):
    """The recipe's `TrainingParts` (model, optimizer, train loader, schedule), built by the engine's
    `build_training_parts` as train_net builds them, after `overrides` (and `train.device=device` when given),
    seeded by `train.seed` (0 when it is -1), with the train loader in-process (`num_workers=0`). The
    optimizer's groups are at the recipe's lr (`initial_lr`), not at the schedule's first warm-up lr: a probe
    trains a few steps at the lr the run trains at."""
    from lazydet.config import LazyConfig
    from lazydet.engine import build_training_parts
    from lazydet.utils.env import seed_all_rng

    cfg = LazyConfig.load(config_file)
    LazyConfig.apply_overrides(cfg, list(overrides) + ([f"train.device={device}"] if device else []))
    if "num_workers" in cfg.dataloader.train:
        cfg.dataloader.train.num_workers = 0
    seed_all_rng(max(int(cfg.train.seed), 0))
    parts = build_training_parts(cfg)
    for group in parts.optimizer.param_groups:
        group["lr"] = group["initial_lr"]
    return parts


def train_batches(parts, n: int) -> list:
    """The first `n` batches of `parts.data_loader`, on `parts.device`."""
    from lazydet.utils import to_device

    it = iter(parts.data_loader)
    return [to_device(next(it), parts.device) for _ in range(n)]


def _step(model, optimizer, batch, clip: float | None) -> tuple[float, dict]:
    loss_dict = model(batch)
    loss = sum(v.float() for v in loss_dict.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
    optimizer.step()
    return float(loss.detach()), {k: float(v.detach()) for k, v in loss_dict.items()}


def clip_norm(cfg) -> float | None:
    """The recipe's gradient-clipping max norm (`train.clip_grad.params.max_norm`), None when clipping is off."""
    clip = cfg.train.clip_grad
    return float(clip.params.max_norm) if clip.enabled else None


@torch.no_grad()
def batch_ap(model, batch) -> dict:
    """COCO box AP of `model` on the images of `batch`, against their own targets (in-memory json)."""
    from lazydet.evaluation import evaluate_coco_detections

    was_training = model.training
    model.eval()
    outputs = model(batch)
    model.train(was_training)
    gt_out = GroundTruthAsPredictions()(batch)
    images, anns, dets = [], [], []
    labels = set()
    for t, gt, out in zip(batch["targets"], gt_out, outputs):
        h, w = (int(x) for x in t["orig_size"])
        images.append({"id": int(t["image_id"]), "height": h, "width": w})
        for box, label in zip(gt["boxes"].tolist(), gt["labels"].tolist()):
            x0, y0, x1, y1 = box
            anns.append({"id": len(anns) + 1, "image_id": int(t["image_id"]), "category_id": label + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
            labels.add(label)
        for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
            x0, y0, x1, y1 = box
            dets.append({"image_id": int(t["image_id"]), "category_id": int(label) + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
            labels.add(int(label))
    gt_json = {"images": images, "annotations": anns,
               "categories": [{"id": k + 1, "name": str(k)} for k in sorted(labels)]}
    return evaluate_coco_detections(gt_json, dets)


def overfit_batch(model, optimizer, batch, iters: int, clip: float | None = None, log_every: int = 10) -> list:
    """Trains on the same batch `iters` times at the optimizer's lr; returns the total loss per step."""
    model.train()
    losses = []
    for i in range(iters):
        loss, _ = _step(model, optimizer, batch, clip)
        losses.append(loss)
        if (i + 1) % log_every == 0 or i == 0:
            logger.info(f"overfit {i + 1}/{iters}: loss {loss:.4f}")
        if not math.isfinite(loss):
            logger.warning(f"overfit: the loss became non-finite at step {i + 1}")
            break
    return losses


def relative_drop(losses, k: int = 5) -> float:
    """1 - mean(last k) / mean(first k)."""
    first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    return 1.0 - last / first if first else 0.0


def still_falling(losses, tail: float = 0.2, p_value: float = 0.05) -> bool:
    """The last `tail` share of the curve has a significantly negative slope (one-sided regression test)."""
    from scipy import stats
    n = max(5, int(len(losses) * tail))
    y = np.asarray(losses[-n:], float)
    if len(y) < 5 or not np.isfinite(y).all():
        return False
    fit = stats.linregress(np.arange(len(y)), y)
    return fit.slope < 0 and fit.pvalue / 2 < p_value


def lr_range_test(model, optimizer, batches, start: float, end: float, iters: int, clip: float | None = None,
                  beta: float = 0.9, stop_factor: float = 4.0) -> tuple[list, list]:
    """Raises every group's lr exponentially from `start` to `end` (keeping the groups' lr ratios), one
    batch per step; returns (lrs, smoothed losses); stops when the loss explodes past `stop_factor` x best."""
    base = max(g["lr"] for g in optimizer.param_groups)
    ratios = [g["lr"] / base if base else 1.0 for g in optimizer.param_groups]
    gamma = (end / start) ** (1.0 / max(iters - 1, 1))
    model.train()
    lrs, smooth, avg, best = [], [], 0.0, math.inf
    for i in range(iters):
        lr = start * gamma ** i
        for g, r in zip(optimizer.param_groups, ratios):
            g["lr"] = lr * r
        loss, _ = _step(model, optimizer, batches[i % len(batches)], clip)
        if not math.isfinite(loss):
            break
        avg = beta * avg + (1 - beta) * loss
        value = avg / (1 - beta ** (i + 1))
        lrs.append(lr)
        smooth.append(value)
        best = min(best, value)
        if (i + 1) % 10 == 0:
            logger.info(f"lr_find {i + 1}/{iters}: lr {lr:.2e} loss {value:.4f}")
        if value > stop_factor * best:
            break
    return lrs, smooth


def suggest_lr(lrs, losses, explode: float = 1.5) -> dict:
    """Three readings of a range test (the first 10% of points, where the average warms up, are skipped):
    'steepest': where the smoothed loss falls fastest per decade of lr, before its minimum (None when the
    curve has no descent); 'min_div_10': a tenth of the lr at the minimum; 'explode_div_10': a tenth of the
    first lr past the minimum where the loss exceeds `explode` x the minimum."""
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    out = {"steepest": None, "min_div_10": None, "explode_div_10": None}
    skip = max(3, len(lrs) // 10)
    if len(lrs) < skip + 3:
        return out
    lo = skip + int(np.argmin(losses[skip:]))
    out["min_div_10"] = float(lrs[lo] / 10)
    if lo - skip >= 3:
        grad = np.gradient(losses[skip:lo + 1], np.log10(lrs[skip:lo + 1]))
        if grad.min() < 0:
            out["steepest"] = float(lrs[skip + int(np.argmin(grad))])
    above = np.nonzero(losses[lo:] > explode * losses[lo])[0]
    out["explode_div_10"] = float(lrs[lo + above[0]] / 10) if len(above) else None
    return out


def save_plot(path: str, xs, ys, *, title: str, xlabel: str, ylabel: str, logx: bool = False, marks=None) -> str:
    """Write a line plot of `ys` over `xs` to `path` (PNG; folders created), with dashed vertical
    lines at `marks` ({label: x}, None entries skipped); returns `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(xs, ys)
    for label, x in (marks or {}).items():
        if x is not None:
            ax.axvline(x, linestyle="--", color="gray")
            ax.annotate(f"{label} {x:.2e}", (x, max(ys)), rotation=90, va="top", fontsize=8)
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
