"""Validation loss: the training losses on a fixed set of validation batches, without the training-only terms.

Some terms exist only in training (DINO's denoising `*_dn` terms score noised copies of the ground truth); the
model says which through `model.is_training_only_loss(name)` (a model without that method has none). They are
left out on both sides: the hook logs `val/total_loss` (and `val/<term>`) beside `train/total_loss_nodn`, which
are directly comparable.
"""
from __future__ import annotations

import itertools

import torch

from lazydet.engine import HookBase


def comparable_losses(model, loss_dict: dict) -> dict:
    """`loss_dict` ({name: scalar}) without the terms `model.is_training_only_loss(name)` marks; all of them
    when the model (or the module a DDP wrapper holds) has no such method."""
    model = getattr(model, "module", model)
    is_training_only = getattr(model, "is_training_only_loss", None)
    if is_training_only is None:
        return dict(loss_dict)
    return {k: v for k, v in loss_dict.items() if not is_training_only(k)}


class ValLossHook(HookBase):
    """Every `period` iterations: model.train() losses under no_grad on the first `num_batches` val batches."""

    def __init__(self, period: int, num_batches: int = 8, loader=None, loader_cfg=None):
        self.period, self.num_batches = int(period), int(num_batches)
        self._loader, self._loader_cfg = loader, loader_cfg
        self._batches = None

    def _val_batches(self):
        if self._batches is None:
            if self._loader is None:
                from lazydet.config import instantiate
                self._loader = instantiate(self._loader_cfg)
            self._batches = list(itertools.islice(iter(self._loader), self.num_batches))
        return self._batches

    @torch.no_grad()
    def compute(self, model) -> dict:
        """{term: mean over the validation batches} of `model`'s comparable loss terms, computed in train mode
        under no_grad; the random streams and `model.training` are as they were afterwards."""
        from lazydet.utils import to_device
        device = next(model.parameters()).device
        sums: dict[str, float] = {}
        batches = self._val_batches()
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the training stream of random numbers stays as it was
            was_training = model.training
            model.train()
            for batch in batches:
                for k, v in comparable_losses(model, model(to_device(batch, device))).items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            model.train(was_training)
        return {k: v / max(len(batches), 1) for k, v in sums.items()}

    def after_step(self):
        """Every `period` iterations: logs `val/total_loss`, `val/<term>` and `train/total_loss_nodn`."""
        t = self.trainer
        if not self.period or (t.iter + 1) % self.period != 0:
            return
        losses = self.compute(t.model)
        storage = t.storage
        storage.put_scalar("val/total_loss", sum(losses.values()), smoothing_hint=False)
        for k, v in losses.items():
            storage.put_scalar(f"val/{k}", v, smoothing_hint=False)
        train = comparable_losses(t.model, getattr(t, "last_loss_dict", None) or {})
        if train:
            storage.put_scalar("train/total_loss_nodn", sum(float(v) for v in train.values()), smoothing_hint=False)
