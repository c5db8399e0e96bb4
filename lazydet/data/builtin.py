"""Datasets every recipe can name without registering them first.

- ``coco_2017_{train,val}``: ``$LAZYDET_DATASETS/coco/{annotations/instances_*2017.json, *2017/}``
  (``$LAZYDET_DATASETS`` defaults to ``./datasets``), read only when used.
- ``coco_mini_{train,val}``: 318 real COCO images (same layout) from ``$LAZYDET_COCO_MINI`` or
  ``<repo>/../shared/data/coco_mini``, registered when present.
- ``synthetic_shapes_{train,val}``: the quickstart's generated dataset (see docs/data.md).
"""
from __future__ import annotations

import os

from .catalog import DatasetCatalog, register_coco_instances
from .synthetic import datasets_root, register_synthetic_shapes

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SYNTHETIC_SHAPES = {
    "synthetic_shapes_train": dict(num_images=1500, image_size=140, seed=0),
    "synthetic_shapes_val": dict(num_images=200, image_size=140, seed=1),
}


def coco_mini_root() -> str | None:
    candidates = [os.environ.get("LAZYDET_COCO_MINI"), os.path.join(_REPO_ROOT, "..", "shared", "data", "coco_mini"),
                  os.path.join("..", "shared", "data", "coco_mini")]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "annotations", "instances_val2017.json")):
            return os.path.normpath(c)
    return None


def _register_coco_layout(prefix: str, root: str) -> None:
    for split in ("train", "val"):
        name = f"{prefix}_{split}"
        if name not in DatasetCatalog:
            register_coco_instances(name, os.path.join(root, "annotations", f"instances_{split}2017.json"),
                                    os.path.join(root, f"{split}2017"))


def register_all_builtin() -> None:
    _register_coco_layout("coco_2017", os.path.join(datasets_root(), "coco"))
    mini = coco_mini_root()
    if mini is not None:
        _register_coco_layout("coco_mini", mini)
    for name, params in SYNTHETIC_SHAPES.items():
        if name not in DatasetCatalog:
            register_synthetic_shapes(name, **params)
