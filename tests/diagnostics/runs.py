"""Short CPU runs of a real recipe through the real Trainer with the doctor attached (planted-fault tests).

Only the doctor and the lr schedule are hooked in (no evaluation or checkpoint writing), so a run of a few
iterations costs seconds. `mutate(model, optimizer, cfg)` plants a fault that overrides cannot express.
"""
import os

import torch

from lazydet.config import LazyConfig, instantiate
from lazydet.diagnostics.hook import DoctorHook
from lazydet.engine import LRScheduler, Trainer
from lazydet.solver import LRMultiplier

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(REPO, "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py")

# Fast settings: every start-up check is judged within the first 3 iterations; the preflight's
# ground-truth evaluation is off unless a test turns it on.
FAST = dict(data=dict(sample_batches=3), params=dict(grad_check_iters=2, change_check_iter=3, ratio_period=0),
            preflight=dict(gt_eval_images=0), log_every_s=0.0)


# CPU-sized: 4 images per batch, loaded in-process
SMALL = ["dataloader.train.total_batch_size=4", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0"]


def recipe_path() -> str:
    """The quickstart recipe (real model, data, optimizer and schedule), sized down by SMALL."""
    return QUICKSTART


def load_cfg(overrides=(), output_dir="/tmp/doctor_test"):
    cfg = LazyConfig.load(recipe_path())
    LazyConfig.apply_overrides(cfg, [f"train.output_dir={output_dir}", *SMALL, *overrides])
    return cfg


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in (extra or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run(cfg, iters: int, settings=None, mutate=None, mutate_model=None, seed: int = 0):
    """Trains `iters` iterations; returns (doctor hook, trainer, the error training died of or None).
    `mutate_model(model)` runs before the optimizer is built; `mutate(model, optimizer, loader)` after it,
    returning the (possibly replaced) triple."""
    torch.manual_seed(seed)
    model = instantiate(cfg.model)
    if mutate_model is not None:
        mutate_model(model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    if mutate is not None:
        model, optimizer, loader = mutate(model, optimizer, loader)
    trainer = Trainer(model, loader, optimizer, max_iter=iters, cfg=cfg, device="cpu",
                      output_dir=cfg.train.output_dir)
    # the recipe's own schedule (its warm-up and steps), whatever the length of this short run
    scheduler = LRMultiplier(optimizer, instantiate(cfg.lr_multiplier), cfg.train.max_iter)
    doctor = DoctorHook(merge(FAST, settings or {}), cfg=cfg, lr_warmup_iters=scheduler.warmup_iters)
    trainer.register_hooks([LRScheduler(scheduler), doctor])
    try:
        trainer.train()
    except Exception as e:  # a fault may crash the model; the doctor's report must still say why
        return doctor, trainer, e
    return doctor, trainer, None
