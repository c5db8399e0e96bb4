"""Load a COCO instances json into compact per-image records, validating as it goes.

Records are what the mapper consumes::

    {"file_name": str, "image_id": int, "height": int, "width": int,
     "boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N] contiguous ids,
     "iscrowd": bool [N], "annotation_ids": int64 [N], "areas": float32 [N] (the json's area, else the box's)}

Numpy arrays rather than lists of dicts keep each record small (it is pickled into the
serialized dataset anyway). Bad entries are skipped and counted, then reported once per
(json file, reason) with the offending ids, so nothing disappears silently.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict

import numpy as np

from .catalog import DataError, DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)

_REPORTED: set[tuple[str, str]] = set()
_MAX_IDS_SHOWN = 5


class _SkipReport:
    """Collects skipped/repaired items per reason; logs one line per reason."""

    def __init__(self, json_file: str, dataset_name: str):
        self.json_file, self.dataset_name = json_file, dataset_name
        self.items: dict[str, list] = defaultdict(list)

    def add(self, reason: str, item) -> None:
        self.items[reason].append(item)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.items.items()}

    def log(self) -> None:
        for reason, items in self.items.items():
            key = (self.json_file, reason)
            if key in _REPORTED:
                continue
            _REPORTED.add(key)
            shown = ", ".join(str(i) for i in items[:_MAX_IDS_SHOWN])
            more = f" and {len(items) - _MAX_IDS_SHOWN} more" if len(items) > _MAX_IDS_SHOWN else ""
            logger.warning(f"dataset {self.dataset_name!r} ({self.json_file}): {len(items)} x {reason}: "
                           f"{shown}{more}")


def _read_json(json_file: str, dataset_name: str) -> dict:
    if not os.path.isfile(json_file):
        raise DataError(f"dataset {dataset_name!r}: annotation file not found: {json_file} "
                        f"(set $LAZYDET_DATASETS, $LAZYDET_COCO_MINI or the path given to register_coco_instances)")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"dataset {dataset_name!r}: malformed JSON in {json_file} at line {e.lineno} "
                        f"column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"dataset {dataset_name!r}: {json_file} is not UTF-8 text ({e.reason})") from None
    if not isinstance(data, dict):
        raise DataError(f"dataset {dataset_name!r}: {json_file} must hold a JSON object, got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"dataset {dataset_name!r}: {json_file} lacks the COCO list(s) {missing} "
                        f"(need 'images', 'annotations', 'categories')")
    return data


def _category_maps(categories: list, json_file: str, dataset_name: str):
    try:
        cats = sorted(categories, key=lambda c: int(c["id"]))
        names = [str(c["name"]) for c in cats]
        ids = [int(c["id"]) for c in cats]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"dataset {dataset_name!r}: {json_file}: every category needs an integer 'id' and a "
                        f"'name' ({type(e).__name__}: {e})") from None
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"dataset {dataset_name!r}: {json_file}: duplicate category ids {dup}")
    if not ids:
        raise DataError(f"dataset {dataset_name!r}: {json_file} has no categories")
    return names, {d: i for i, d in enumerate(ids)}


def _valid_bbox(bbox) -> bool:
    return (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox))


def _index_images(images: list, image_root: str, check_image_files: bool, report: _SkipReport) -> dict:
    """image id -> record under construction (``"anns"`` still a list), or None for an image whose file is missing."""
    index: dict[int, dict | None] = {}
    for img in images:
        try:
            image_id, file_name = int(img["id"]), str(img["file_name"])
            height, width = int(img["height"]), int(img["width"])
        except (KeyError, TypeError, ValueError):
            report.add("image records without integer id/height/width and file_name (skipped)",
                       img.get("id", img) if isinstance(img, dict) else img)
            continue
        if image_id in index:
            report.add("duplicate image ids (later record skipped)", image_id)
            continue
        path = os.path.join(image_root, file_name)
        if check_image_files and not os.path.isfile(path):
            report.add("images whose file is missing (skipped with their annotations)", path)
            index[image_id] = None  # known id, but no usable image
            continue
        index[image_id] = {"file_name": path, "image_id": image_id, "height": height, "width": width, "anns": []}
    return index


def _checked_annotation(ann, images: dict, id_map: dict, seen_ids: set, report: _SkipReport):
    """One json annotation -> ``(image record, (x0, y0, x1, y1, label, iscrowd, id, area))``, or None when it is
    skipped (counted in ``report`` under its reason, with its annotation id). Boxes partly outside are clipped."""
    ann_id = ann.get("id", "?") if isinstance(ann, dict) else "?"
    if not isinstance(ann, dict) or "image_id" not in ann:
        report.add("annotations without image_id (skipped), annotation ids", ann_id)
        return None
    if ann_id != "?" and ann_id in seen_ids:
        report.add("duplicate annotation ids (later annotation skipped), annotation ids", ann_id)
        return None
    seen_ids.add(ann_id)
    img = images.get(ann["image_id"], "absent")
    if img == "absent":
        report.add("annotations pointing to an image id absent from 'images' (skipped), annotation ids", ann_id)
        return None
    if img is None:
        return None  # counted with the missing image file
    if ann.get("category_id") not in id_map:
        report.add("annotations with a category id not in 'categories' (skipped), annotation ids", ann_id)
        return None
    bbox = ann.get("bbox")
    if not _valid_bbox(bbox):
        report.add("annotations whose bbox is not 4 finite numbers (skipped), annotation ids", ann_id)
        return None
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        report.add("annotations with zero or negative width/height (skipped), annotation ids", ann_id)
        return None
    x0, y0 = min(max(x, 0.0), img["width"]), min(max(y, 0.0), img["height"])
    x1, y1 = min(max(x + w, 0.0), img["width"]), min(max(y + h, 0.0), img["height"])
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        report.add("annotations whose box lies entirely outside its image (skipped), annotation ids", ann_id)
        return None
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        report.add("annotations whose box extends outside its image (clipped), annotation ids", ann_id)
    area = ann.get("area")  # COCO's area is the mask's: it decides small/medium/large in the evaluation
    if not (isinstance(area, (int, float)) and math.isfinite(area) and area > 0):
        area = (x1 - x0) * (y1 - y0)
    return img, (x0, y0, x1, y1, id_map[ann["category_id"]], bool(ann.get("iscrowd", 0)),
                 int(ann_id) if isinstance(ann_id, int) else -1, float(area))


def _finish_record(img: dict) -> dict:
    anns = img.pop("anns")
    img["boxes"] = np.asarray([a[:4] for a in anns], dtype=np.float32).reshape(-1, 4)
    img["labels"] = np.asarray([a[4] for a in anns], dtype=np.int64)
    img["iscrowd"] = np.asarray([a[5] for a in anns], dtype=bool)
    img["annotation_ids"] = np.asarray([a[6] for a in anns], dtype=np.int64)
    img["areas"] = np.asarray([a[7] for a in anns], dtype=np.float32)
    return img


def load_coco_json(json_file: str, image_root: str, dataset_name: str | None = None,
                   check_image_files: bool = True) -> list[dict]:
    """Read ``json_file`` (COCO instances format) with images under ``image_root`` into records.

    Returns one record per usable image (format in the module docstring); the training loader and the
    evaluator's ground truth both come from these records, so both see the same validated boxes. Also sets
    the dataset's metadata (``thing_classes`` and both category-id maps) when ``dataset_name`` is given.
    Skipped or repaired items are counted in ``MetadataCatalog.get(dataset_name).load_report`` and logged
    once. Raises ``DataError`` (one line naming the file) when the json or the image folder is unusable.
    """
    json_file, image_root = str(json_file), str(image_root)
    name = dataset_name or json_file
    data = _read_json(json_file, name)
    if not os.path.isdir(image_root):
        raise DataError(f"dataset {name!r}: image folder not found: {image_root}")
    thing_classes, id_map = _category_maps(data["categories"], json_file, name)
    report = _SkipReport(json_file, name)
    images = _index_images(data["images"], image_root, check_image_files, report)
    seen_ids: set = set()
    for ann in data["annotations"]:
        checked = _checked_annotation(ann, images, id_map, seen_ids, report)
        if checked is not None:
            checked[0]["anns"].append(checked[1])
    records = [_finish_record(img) for img in images.values() if img is not None]
    report.log()

    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        meta.set(thing_classes=thing_classes, thing_dataset_id_to_contiguous_id=id_map,
                 thing_contiguous_id_to_dataset_id={v: k for k, v in id_map.items()})
        meta.load_report = report.counts()
    logger.info(f"loaded {len(records)} images, {sum(len(r['labels']) for r in records)} annotations "
                f"from {json_file}")
    return records


def register_coco_instances(name: str, json_file: str, image_root: str, metadata: dict | None = None) -> None:
    """Register a COCO-format instances json + image folder under ``name``.

    Nothing is read now: the json is loaded (and the category metadata set) on the first
    ``DatasetCatalog.get(name)``, so registering datasets that are absent on disk is free.
    """
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=str(json_file), image_root=str(image_root),
                                  evaluator_type="coco", **(metadata or {}))
