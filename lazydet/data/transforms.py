"""Augmentation recipes built from torchvision.transforms.v2 (images + tv_tensors.BoundingBoxes).

Each builder returns one v2 transform called as ``aug(image, {"boxes": BoundingBoxes, "labels": ...})``;
every size is an argument so recipes can override it. The mapper clamps boxes and drops
degenerate ones after any of these.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

DETR_MIN_SIZES = tuple(range(480, 801, 32))  # 480, 512, ..., 800


class RandomSizeCrop(v2.Transform):
    """Crop a random window whose height and width are drawn uniformly from
    [min_size, max_size], never larger than the image (so LSJ uses min=max=target)."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"RandomSizeCrop needs 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = int(min_size), int(max_size)

    def _draw(self, limit: int) -> int:
        lo, hi = min(self.min_size, limit), min(self.max_size, limit)
        return int(torch.randint(lo, hi + 1, (1,)).item())

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw the window (top, left, height, width) once per call, shared by the image and its boxes."""
        height, width = query_size(flat_inputs)
        h, w = self._draw(height), self._draw(width)
        top = int(torch.randint(0, height - h + 1, (1,)).item())
        left = int(torch.randint(0, width - w + 1, (1,)).item())
        return dict(top=top, left=left, height=h, width=w)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Crop one input (image, boxes, mask) to the drawn window."""
        return self._call_kernel(F.crop, inpt, **params)


def detr_train_augmentation(min_sizes: Sequence[int] = DETR_MIN_SIZES, max_size: int = 1333,
                            crop_resize_sizes: Sequence[int] = (400, 500, 600),
                            crop_size: Sequence[int] = (384, 600), crop_prob: float = 0.5,
                            flip: bool = True) -> v2.Transform:
    """DETR / DINO recipe: flip; multi-scale resize of the short side (long side <= max_size);
    with probability ``crop_prob`` first resize to one of ``crop_resize_sizes``, random-crop a
    window of ``crop_size`` range, then multi-scale resize."""
    multi_scale = v2.RandomShortestSize(min_size=list(min_sizes), max_size=max_size)
    steps = [v2.RandomHorizontalFlip()] if flip else []
    if crop_prob > 0:
        crop_branch = v2.Compose([v2.RandomShortestSize(min_size=list(crop_resize_sizes)),
                                  RandomSizeCrop(*crop_size), multi_scale])
        steps.append(v2.RandomChoice([multi_scale, crop_branch], p=[1.0 - crop_prob, crop_prob]))
    else:
        steps.append(multi_scale)
    return v2.Compose(steps)


def lsj_train_augmentation(image_size: int = 1024, min_scale: float = 0.1, max_scale: float = 2.0,
                           flip: bool = True) -> v2.Transform:
    """ViTDet large-scale jitter: rescale so the image fits ``image_size`` times a factor drawn from
    [min_scale, max_scale], then crop at most ``image_size`` x ``image_size``. Padding to the fixed
    square is the collate's job (``fixed_size``), so the pixel mask marks it."""
    steps = [v2.RandomHorizontalFlip()] if flip else []
    steps += [v2.ScaleJitter(target_size=(image_size, image_size), scale_range=(min_scale, max_scale)),
              RandomSizeCrop(image_size, image_size)]
    return v2.Compose(steps)


def detr_test_augmentation(short_size: int | None = 800, max_size: int | None = 1333) -> v2.Transform:
    """Deterministic test-time resize of the short side (long side capped); ``None`` keeps the image."""
    if short_size is None:
        return v2.Identity()
    return v2.Resize(size=short_size, max_size=max_size)


def lsj_test_resize(image_size: int = 1024) -> v2.Transform:
    """ViTDet test resize: the long side becomes ``image_size``."""
    return v2.Resize(size=None, max_size=image_size)


def resize_flip_augmentation(min_sizes: Sequence[int], max_size: int | None = None,
                             flip: bool = True) -> v2.Transform:
    """Light recipe for small synthetic images: flip + multi-scale short side."""
    steps = [v2.RandomHorizontalFlip()] if flip else []
    steps.append(v2.RandomShortestSize(min_size=list(min_sizes), max_size=max_size))
    return v2.Compose(steps)

