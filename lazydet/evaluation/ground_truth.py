"""The evaluator's ground truth, built from the same validated records the loaders read.

Scoring the raw json instead would count what the loader skipped (boxes with negative size, outside the
image, NaN/string coordinates, duplicate annotation ids), so even perfect predictions would score below
AP 100; building it from the records makes "ground truth as predictions" score AP 100 on every dataset
the loader accepts.
"""
from __future__ import annotations

from lazydet.data.catalog import DataError, DatasetCatalog, MetadataCatalog, dataset_records, ensure_category_metadata
from lazydet.data.coco import load_coco_json


def evaluation_records(dataset_name: str) -> list[dict]:
    """Records of ``dataset_name``: those of the catalog (``dataset_records``), or, for a name that only has
    metadata (``json_file`` + ``image_root``, e.g. a sample written by a tool), the same loader run on its json."""
    if dataset_name in DatasetCatalog:
        return dataset_records(dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    if meta.get("json_file") is None or meta.get("image_root") is None:
        raise DataError(f"dataset {dataset_name!r} is not registered and its metadata has no json_file/image_root: "
                        f"the evaluator has no ground truth for it")
    return load_coco_json(meta.json_file, meta.image_root, None)


def coco_ground_truth(records: list[dict], dataset_name: str) -> dict:
    """A COCO-format ground-truth dict (``images``, ``annotations``, ``categories``) from loader records.

    ``records``: dicts with ``image_id``, ``file_name``, ``height``, ``width``, ``boxes`` float [N, 4] xyxy
    pixels, ``labels`` int [N] contiguous, ``iscrowd`` bool [N] and optionally ``areas`` float [N] (the
    json's mask area, which decides small/medium/large; the box area when absent). Category ids and names
    come from the metadata of ``dataset_name``; annotations are numbered 1..N in record order.
    """
    meta = ensure_category_metadata(dataset_name)
    to_dataset_id = meta.thing_contiguous_id_to_dataset_id
    categories = [{"id": to_dataset_id[k], "name": name} for k, name in enumerate(meta.thing_classes)]
    images, annotations = [], []
    for r in records:
        images.append({"id": int(r["image_id"]), "file_name": r["file_name"], "height": int(r["height"]),
                       "width": int(r["width"])})
        areas = r.get("areas")
        for k, (x0, y0, x1, y1) in enumerate(r["boxes"].tolist()):
            w, h = x1 - x0, y1 - y0
            annotations.append({"id": len(annotations) + 1, "image_id": int(r["image_id"]),
                                "category_id": to_dataset_id[int(r["labels"][k])], "bbox": [x0, y0, w, h],
                                "area": float(areas[k]) if areas is not None else w * h,
                                "iscrowd": int(bool(r["iscrowd"][k]))})
    return {"images": images, "annotations": annotations, "categories": categories}
