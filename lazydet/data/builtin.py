"""Datasets every recipe can name without registering them first.

- ``coco_2017_{train,val}``: ``$LAZYDET_DATASETS/coco/{annotations/instances_*2017.json, *2017/}``
  (``$LAZYDET_DATASETS`` defaults to ``./datasets``).
- ``coco_mini_{train,val}``: any folder with the same COCO layout, at ``$LAZYDET_COCO_MINI``
  (default ``$LAZYDET_DATASETS/coco_mini``), e.g. a small real-COCO subset for smoke tests.
- ``synthetic_shapes_{train,val}``: the quickstart's generated dataset (see docs/data.md).

All are registered lazily: nothing is read until a loader or evaluator asks for the records, and a
missing folder is reported then (or by ``check_datasets`` at the start of a run) with its path.
"""
from __future__ import annotations

import os

from .catalog import DatasetCatalog
from .coco import register_coco_instances
from .synthetic import datasets_root, register_synthetic_shapes

SYNTHETIC_SHAPES = {
    "synthetic_shapes_train": dict(num_images=1500, image_size=140, seed=0),
    "synthetic_shapes_val": dict(num_images=200, image_size=140, seed=1),
}


def coco_mini_root() -> str:
    """Folder of the ``coco_mini_*`` datasets: ``$LAZYDET_COCO_MINI``, else ``$LAZYDET_DATASETS/coco_mini``."""
    return os.environ.get("LAZYDET_COCO_MINI") or os.path.join(datasets_root(), "coco_mini")


def register_coco_layout(prefix: str, root: str, splits=("train", "val")) -> list[str]:
    """Register ``<prefix>_<split>`` for each split of a folder laid out like COCO 2017:
    ``root/annotations/instances_<split>2017.json`` with images in ``root/<split>2017/``.

    Names already registered are left alone; returns the names of this layout (registered now or before).
    """
    names = []
    for split in splits:
        name = f"{prefix}_{split}"
        if name not in DatasetCatalog:
            register_coco_instances(name, os.path.join(root, "annotations", f"instances_{split}2017.json"),
                                    os.path.join(root, f"{split}2017"))
        names.append(name)
    return names


def register_all_builtin() -> None:
    """Register the datasets above (called once when ``lazydet.data`` is imported)."""
    register_coco_layout("coco_2017", os.path.join(datasets_root(), "coco"))
    register_coco_layout("coco_mini", coco_mini_root())
    for name, params in SYNTHETIC_SHAPES.items():
        if name not in DatasetCatalog:
            register_synthetic_shapes(name, **params)
