"""Random images and boxes in the train loader's batch format, and a recipe rewritten to train on them.

The GPU report times a recipe where no dataset and no pretrained weights exist (a freshly lent machine):
`with_random_images(cfg)` swaps the recipe's train loader for `RandomDetectionBatches` at the recipe's
largest training size and turns pretrained weights off; everything else (model, optimizer, schedule,
clipping) stays the recipe's own. The result is saved as YAML, so every timing child loads exactly it.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch

from lazydet.config import LazyCall as L

COCO_MEAN_BOXES = 7  # COCO train has ~7.3 annotated objects per image


class RandomDetectionBatches:
    """Endless, seeded batches shaped like `build_detection_train_loader`'s (docs/ARCHITECTURE.md).

    Each batch: `images` uint8 [B, 3, height, width], `pixel_mask` bool [B, height, width] (all True),
    `targets`: per image `labels` int64 [n], `boxes` float32 [n, 4] (cx, cy, w, h normalised to the image),
    `size` and `orig_size` int64 [2] = (height, width), a unique `image_id`; n is 1..2*mean_boxes-1.
    """

    def __init__(self, total_batch_size: int, height: int, width: int, num_classes: int,
                 mean_boxes: int = COCO_MEAN_BOXES, seed: int = 0):
        if min(total_batch_size, height, width, num_classes, mean_boxes) < 1:
            raise ValueError(f"RandomDetectionBatches: sizes must be >= 1, got total_batch_size={total_batch_size}, "
                             f"height={height}, width={width}, num_classes={num_classes}, mean_boxes={mean_boxes}")
        self.batch_size, self.height, self.width = int(total_batch_size), int(height), int(width)
        self.num_classes, self.mean_boxes, self.seed = int(num_classes), int(mean_boxes), int(seed)

    def __iter__(self) -> Iterator[dict]:
        gen = torch.Generator().manual_seed(self.seed)
        image_id = 0
        while True:
            targets = []
            for _ in range(self.batch_size):
                targets.append(self._target(gen, image_id))
                image_id += 1
            images = torch.randint(0, 256, (self.batch_size, 3, self.height, self.width), generator=gen,
                                   dtype=torch.uint8)
            mask = torch.ones(self.batch_size, self.height, self.width, dtype=torch.bool)
            yield {"images": images, "pixel_mask": mask, "targets": targets}

    def _target(self, gen: torch.Generator, image_id: int) -> dict:
        n = int(torch.randint(1, 2 * self.mean_boxes, (1,), generator=gen))
        wh = 0.05 + 0.45 * torch.rand(n, 2, generator=gen)  # 5-50 % of the image side
        centre = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=gen)  # boxes lie inside the image
        size = torch.tensor([self.height, self.width], dtype=torch.int64)
        return {"labels": torch.randint(0, self.num_classes, (n,), generator=gen, dtype=torch.int64),
                "boxes": torch.cat([centre, wh], dim=1), "size": size, "orig_size": size.clone(),
                "image_id": image_id}


def train_image_size(cfg) -> Tuple[int, int]:
    """(height, width) of the recipe's largest training image: the largest short side, the long-side cap
    (COCO recipes: 800 x 1333); a recipe without a cap trains on squares of its largest short side."""
    aug = cfg.dataloader.train.mapper.augmentation
    short = max(int(s) for s in aug.min_sizes)
    long = aug.get("max_size")
    return short, int(long) if long else short


def with_random_images(cfg, size: Optional[Tuple[int, int]] = None, seed: int = 0):
    """The recipe `cfg` (changed in place and returned) training on `RandomDetectionBatches` of `size`
    (default `train_image_size(cfg)`) with its batch size, random init (`model.backbone.net.pretrained`)."""
    height, width = size if size is not None else train_image_size(cfg)
    cfg.dataloader.train = L(RandomDetectionBatches)(
        total_batch_size=cfg.dataloader.train.total_batch_size, height=height, width=width,
        num_classes=cfg.model.num_classes, seed=seed)
    cfg.model.backbone.net.pretrained = False
    return cfg
