"""The doctor's settings (`train.doctor.*`): defaults in one place, merged with what a recipe sets.

`configs/common/doctor.py` exposes `default_settings()` as the recipe's `doctor` tree, so every key is
visible (and overridable as `train.doctor.loss.divergence_ratio=3`) in config.yaml.
"""
from __future__ import annotations

import copy
import difflib

from omegaconf import DictConfig, ListConfig, OmegaConf

DEFAULTS = dict(
    enabled=True,
    report_file="doctor_report.md",
    log_every_s=300.0,          # a finding with the same name is logged at most once per this many seconds
    check_period=20,            # iterations between the series checks (divergence, no learning, ...)
    stop_on=["non_finite_loss", "non_finite_grad"],  # findings that stop training (add "divergence", ...)
    warmup_iters=100,           # no slope / ratio checks before this iteration
    max_fp16_overflow_steps=20,  # consecutive fp16 GradScaler overflow steps tolerated before stopping
    loss=dict(
        window=50,              # points (iterations in the hook, logged rows in tools/diagnose)
        divergence_ratio=2.0,   # smoothed loss above this x its smoothed minimum -> divergence
        no_learning_min_drop=0.05,  # relative drop from the start below which the loss "does not fall"
        no_learning_p_value=0.05,   # one-sided slope test significance
        noisy_cv=0.25,          # detrended coefficient of variation counted as "noisy"
    ),
    grad=dict(explosion_ratio=10.0, recent=5, baseline=50),
    eval=dict(metric="bbox/AP", chance=0.5, min_evals=3, flat_rel_tol=0.05, flat_abs_tol=0.5),
    params=dict(
        grad_check_iters=3,     # iterations over which every trainable tensor must get a gradient once
        change_check_iter=20,   # iteration after which tensors in the optimizer must have changed
        ratio_period=100,       # iterations between update/weight-ratio probes (0: off)
        ratio_low=1e-6,
        ratio_high=0.1,
        expected_frozen=["backbone*"],  # name patterns of modules that may be frozen on purpose
        ignore=[],              # name patterns of parameters exempt from the gradient/optimizer checks
    ),
    data=dict(
        sample_batches=10,      # first batches whose targets and inputs are checked
        outside_tol=0.02,
        max_abs_input_mean=3.0,
        input_std_range=[0.1, 5.0],
        empty_warn=0.5,
        imbalance_ratio=50.0,
    ),
    preflight=dict(
        enabled=True,
        reference_total_batch_size=None,  # the recipe's reference batch and lr (DINO: 16 and 1e-4)
        reference_lr=None,
        lr_tolerance=1.5,       # warn when lr/batch differs from the reference ratio by more than this factor
        audit_depth=2,          # module depth of the parameter audit table
        min_load_coverage=0.9,  # fraction of the target's parameters an init checkpoint must fill
        gt_eval_images=16,      # validation images scored with ground truth as predictions (0: off)
    ),
    val_loss_period=0,          # iterations between validation-loss passes (0: off)
    val_loss_batches=8,
    early_stop=dict(enabled=False, metric="bbox/AP", mode="max", patience=5, min_delta=0.0),
)


def default_settings() -> dict:
    """A fresh deep copy of `DEFAULTS` (`train.doctor`'s settings), safe to modify."""
    return copy.deepcopy(DEFAULTS)


def _to_plain(cfg):
    if cfg is None:
        return {}
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def merge_settings(user, defaults=None, path="train.doctor") -> dict:
    """`defaults` updated with `user`; an unknown key is a one-line error naming the closest known keys."""
    out = copy.deepcopy(DEFAULTS if defaults is None else defaults)
    for key, value in (_to_plain(user) or {}).items():
        if key not in out:
            close = difflib.get_close_matches(key, list(out), n=3)
            raise KeyError(f"unknown doctor setting {path}.{key}; did you mean: {', '.join(close) or sorted(out)}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge_settings(value, out[key], f"{path}.{key}")
        else:
            out[key] = value
    if defaults is None:
        from .findings import CATALOG
        unknown = [n for n in out["stop_on"] if n not in CATALOG]
        if unknown:
            raise KeyError(f"{path}.stop_on names unknown findings {unknown}; known: {', '.join(CATALOG)}")
    return out
