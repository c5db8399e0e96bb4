"""COCO box AP: score detections against a COCO json, gathering predictions from every rank.

The numbers come from faster-coco-eval (a C++ port of pycocotools' COCOeval, much faster on the 5k
val images); tests/evaluation checks that they equal pycocotools' own to 1e-4.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import os

import numpy as np
from tabulate import tabulate

from lazydet.data.catalog import DataError, MetadataCatalog, ensure_category_metadata
from lazydet.utils import comm

from .ground_truth import coco_ground_truth, evaluation_records

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
SKIPPED_KEY = "bbox/skipped_images"  # images not scored because they could not be read


def _load_gt(gt_json):
    from faster_coco_eval import COCO

    if isinstance(gt_json, dict):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_json)
        gt.createIndex()
        return gt
    if not os.path.isfile(str(gt_json)):
        raise DataError(f"ground-truth json not found: {gt_json}")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(gt_json))


def evaluate_coco_detections(gt_json, detections: list[dict], category_names: dict | None = None) -> dict:
    """Box AP of COCO-format ``detections`` ({image_id, category_id, bbox xywh, score}) against
    ``gt_json`` (path or loaded dict). Returns ``{"bbox/AP": ..., "bbox/AP-<name>": ...}`` on 0-100;
    per-category AP is NaN for a category without ground truth."""
    from faster_coco_eval import COCOeval_faster

    gt = _load_gt(gt_json)
    cats = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    if category_names:
        cats.update(category_names)
    if not detections:
        logger.warning("no detections to evaluate: every AP is 0")
        return {f"bbox/{k}": 0.0 for k in SUMMARY_KEYS} | {f"bbox/AP-{n}": 0.0 for n in cats.values()}
    unknown = {d["image_id"] for d in detections} - set(gt.getImgIds())
    if unknown:
        raise DataError(f"detections refer to image ids absent from the ground truth: {sorted(unknown)[:5]}")
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(detections))
        coco_eval = COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    # a stat of -1 means "no ground truth in this area range": report NaN, as detectron2 does
    results = {f"bbox/{k}": float(coco_eval.stats[i] * 100) if coco_eval.stats[i] >= 0 else float("nan")
               for i, k in enumerate(SUMMARY_KEYS)}
    # precision: [iou thresholds, recall points, categories, area ranges, max dets]
    precision = np.asarray(coco_eval.eval["precision"])
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        results[f"bbox/AP-{cats[cat_id]}"] = float(p.mean() * 100) if p.size else float("nan")
    return results


def format_results_table(results: dict) -> str:
    """The results of ``COCOEvaluator.evaluate`` as text: one row of summary APs, then per-category AP three
    pairs per row (as detectron2 prints), then how many images were not scored, when any."""
    skipped = results.get(SKIPPED_KEY)
    summary = [[k.split("/", 1)[1], f"{results[k]:.3f}"] for k in results
               if not k.startswith("bbox/AP-") and k != SKIPPED_KEY]
    per_cat = [(k[len("bbox/AP-"):], results[k]) for k in results if k.startswith("bbox/AP-")]
    cols = 3  # (category, AP) pairs per row, as detectron2 prints
    rows = [list(itertools.chain(*[(n, f"{v:.3f}") for n, v in per_cat[i:i + cols]])) for i in
            range(0, len(per_cat), cols)]
    table = (tabulate([[v for _, v in summary]], headers=[n for n, _ in summary], tablefmt="pipe") + "\n\n"
             + tabulate(rows, headers=["category", "AP"] * cols, tablefmt="pipe"))
    if skipped:
        table += f"\n\n{int(skipped)} image(s) could not be read and are not scored (named in the warnings above)"
    return table


class COCOEvaluator:
    """Collects model outputs over a dataset and reports COCO box AP.

    ``process(batch, outputs)`` takes the loader's batch and the model's eval outputs (per image
    ``boxes`` float [K, 4] xyxy in original-image pixels, ``scores`` [K], contiguous ``labels`` [K]); images
    the loader could not read arrive in ``batch["skipped"]`` and are counted. The ground truth is built from
    the dataset's validated records (``lazydet.evaluation.ground_truth``), the same the loader reads.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, max_dets_per_image: int = 100):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.max_dets_per_image = max_dets_per_image
        # also generates synthetic data on first use
        self._to_dataset_id = ensure_category_metadata(dataset_name).thing_contiguous_id_to_dataset_id
        self._predictions: list[dict] = []
        self._skipped: list[dict] = []

    def reset(self) -> None:
        """Forget what ``process`` collected (called by ``inference_on_dataset`` before each evaluation)."""
        self._predictions, self._skipped = [], []

    def process(self, batch: dict, outputs: list[dict]) -> None:
        """Keep the ``max_dets_per_image`` best-scoring detections of each image as COCO-format dicts."""
        self._skipped.extend(batch.get("skipped", []))
        for target, out in zip(batch["targets"], outputs):
            scores = out["scores"].detach().float().cpu()
            order = scores.argsort(descending=True)[: self.max_dets_per_image]
            boxes = out["boxes"].detach().float().cpu()[order]
            boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
            labels = out["labels"].detach().cpu()[order].tolist()
            for box, score, label in zip(boxes.tolist(), scores[order].tolist(), labels):
                if label not in self._to_dataset_id:
                    raise DataError(f"model predicted label {label} but dataset {self.dataset_name!r} has "
                                    f"{len(self._to_dataset_id)} classes (check model.num_classes)")
                self._predictions.append({"image_id": int(target["image_id"]),
                                          "category_id": self._to_dataset_id[label],
                                          "bbox": [round(v, 3) for v in box], "score": round(score, 5)})

    def evaluate(self) -> dict:
        """Gather every rank's detections (collective) and score them: ``{"bbox/AP": ..., ...}`` on the main
        process (plus ``bbox/skipped_images`` when images could not be read), ``{}`` on the others."""
        gathered = comm.gather((self._predictions, self._skipped))
        if not comm.is_main_process():
            return {}
        predictions = list(itertools.chain(*(p for p, _ in gathered)))
        skipped = list(itertools.chain(*(s for _, s in gathered)))
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            path = os.path.join(self.output_dir, "coco_instances_results.json")
            with open(path, "w") as f:
                json.dump(predictions, f)
            logger.info(f"wrote {len(predictions)} detections to {path}")
        skipped_ids = {s["image_id"] for s in skipped}
        for s in skipped:
            logger.warning(f"evaluation of {self.dataset_name!r}: image {s['file_name']} (id {s['image_id']}) "
                           f"not scored: {s['reason']}")
        records = [r for r in evaluation_records(self.dataset_name) if r["image_id"] not in skipped_ids]
        results = evaluate_coco_detections(coco_ground_truth(records, self.dataset_name), predictions)
        num_skipped = len(skipped_ids) + len(MetadataCatalog.get(self.dataset_name).get("bad_images") or {})
        if num_skipped:
            results[SKIPPED_KEY] = float(num_skipped)
        logger.info(f"COCO box AP on {self.dataset_name} ({len(records)} images, {len(predictions)} detections):\n"
                    + format_results_table(results))
        return results
