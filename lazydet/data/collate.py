"""Batch mapped samples: zero-pad images to a common size and mark real pixels in a mask."""
from __future__ import annotations

import math

import torch


class DetectionCollator:
    """Picklable ``collate_fn``: list of ``{"image", "target"}`` -> the batch dict of docs/ARCHITECTURE.md.

    Pads to the batch's largest height/width (or to ``fixed_size`` (h, w), e.g. the LSJ square), then
    rounds up to a multiple of ``size_divisibility`` (e.g. the ViT patch size 14) when it is > 0.
    """

    def __init__(self, size_divisibility: int = 0, fixed_size=None):
        self.size_divisibility = int(size_divisibility or 0)
        self.fixed_size = tuple(fixed_size) if fixed_size is not None else None

    def padded_size(self, sizes) -> tuple[int, int]:
        """(Hp, Wp) the batch is padded to, from the (h, w) of its images."""
        hp = max(s[0] for s in sizes)
        wp = max(s[1] for s in sizes)
        if self.fixed_size is not None:
            if hp > self.fixed_size[0] or wp > self.fixed_size[1]:
                raise ValueError(f"image of size ({hp}, {wp}) exceeds collate fixed_size {self.fixed_size}; "
                                 f"crop in the augmentation first")
            hp, wp = self.fixed_size
        if self.size_divisibility > 0:
            d = self.size_divisibility
            hp, wp = math.ceil(hp / d) * d, math.ceil(wp / d) * d
        return hp, wp

    def __call__(self, samples: list[dict]) -> dict:
        """``samples``: mapper outputs (``image`` uint8 [3, h, w], ``target``), or ``{"skipped": info}`` for an
        image the test loader could not read. Returns ``images`` uint8 [B, 3, Hp, Wp], ``pixel_mask`` bool
        [B, Hp, Wp] (True on real pixels), ``targets`` (B dicts) and, only when some were unreadable,
        ``skipped`` (their infos); B may be 0 when every image of the batch was unreadable."""
        if not samples:
            raise ValueError("cannot collate an empty batch")
        skipped = [s["skipped"] for s in samples if "skipped" in s]
        samples = [s for s in samples if "skipped" not in s]
        sizes = [s["image"].shape[-2:] for s in samples]
        hp, wp = self.padded_size(sizes) if samples else (0, 0)
        images = torch.zeros((len(samples), 3, hp, wp), dtype=torch.uint8)
        mask = torch.zeros((len(samples), hp, wp), dtype=torch.bool)
        for i, s in enumerate(samples):
            h, w = s["image"].shape[-2:]
            images[i, :, :h, :w] = s["image"]
            mask[i, :h, :w] = True
        batch = {"images": images, "pixel_mask": mask, "targets": [s["target"] for s in samples]}
        if skipped:
            batch["skipped"] = skipped
        return batch
