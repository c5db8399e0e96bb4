"""COCO box AP: faster-coco-eval numbers equal pycocotools', and the full data path scores GT as AP 100."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch

from lazydet.data import (DetrDatasetMapper, MetadataCatalog, build_detection_test_loader, detr_test_augmentation,
                          get_detection_dataset_dicts)
from lazydet.data.builtin import coco_mini_root
from lazydet.evaluation import COCOEvaluator, evaluate_coco_detections, inference_on_dataset
from tests.data.data_test_utils import GroundTruthModel

KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


@pytest.fixture(scope="module")
def gt_json():
    """The val json of the in-repo real-COCO fixture (tests/fixtures/coco_mini)."""
    return os.path.join(coco_mini_root(), "annotations", "instances_val2017.json")


def _pycocotools(gt_json, dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    per_cat = {}
    for k, cat in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        per_cat[f"bbox/AP-{names[cat]}"] = p.mean() * 100 if p.size else float("nan")
    return {f"bbox/{k}": ev.stats[i] * 100 for i, k in enumerate(KEYS)} | per_cat


def _random_detections(gt_json, seed):
    """GT boxes jittered, with random scores, wrong classes and pure false positives."""
    rng = np.random.default_rng(seed)
    gt = json.load(open(gt_json))
    cat_ids = [c["id"] for c in gt["categories"]]
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = a["bbox"]
        jit = rng.normal(0, 0.1, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids))
        dets.append({"image_id": a["image_id"], "category_id": cat, "score": float(rng.random()),
                     "bbox": [x + jit[0], y + jit[1], max(w + jit[2], 1), max(h + jit[3], 1)]})
    for im, (W, H) in sizes.items():
        for _ in range(int(rng.integers(0, 4))):
            w, h = rng.uniform(5, W / 2), rng.uniform(5, H / 2)
            dets.append({"image_id": im, "category_id": int(rng.choice(cat_ids)), "score": float(rng.random()),
                         "bbox": [rng.uniform(0, W - w), rng.uniform(0, H - h), w, h]})
    return dets


def _perfect_detections(gt_json):
    gt = json.load(open(gt_json))
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"] if not a["iscrowd"]]


@pytest.mark.parametrize("kind", ["random0", "random1", "perfect"])
def test_equals_pycocotools(gt_json, kind):
    dets = _perfect_detections(gt_json) if kind == "perfect" else _random_detections(gt_json, int(kind[-1]))
    ours, ref = evaluate_coco_detections(gt_json, dets), _pycocotools(gt_json, dets)
    assert set(ours) == set(ref) and len(ours) == 6 + 80
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=1e-4, nan_ok=True), k
    if kind == "perfect":
        assert ours["bbox/AP"] == pytest.approx(100.0)
    else:
        assert 5 < ours["bbox/AP"] < 95


def test_ground_truth_through_the_whole_path_gives_ap_100(gt_json, tmp_path):
    """dataset -> test mapper (resize) -> collate -> boxes scaled back to original pixels -> evaluator."""
    records = get_detection_dataset_dicts("coco_mini_val", filter_empty=False)
    loader = build_detection_test_loader(records, DetrDatasetMapper(detr_test_augmentation(800, 1333), is_train=False),
                                         batch_size=4, num_workers=0)
    evaluator = COCOEvaluator("coco_mini_val", output_dir=str(tmp_path))
    model = GroundTruthModel().train()
    results = inference_on_dataset(model, loader, evaluator)
    assert model.training  # mode restored
    for k in KEYS:
        assert results[f"bbox/{k}"] == pytest.approx(100.0, abs=0.01), k
    written = json.load(open(tmp_path / "coco_instances_results.json"))
    assert len(written) == sum(len(r["labels"]) - int(r["iscrowd"].sum()) for r in records)
    assert {d["category_id"] for d in written} <= set(MetadataCatalog.get("coco_mini_val")
                                                      .thing_dataset_id_to_contiguous_id)


def test_evaluator_rejects_label_out_of_range(gt_json):
    ev = COCOEvaluator("coco_mini_val")
    batch = {"targets": [{"image_id": 139}]}
    with pytest.raises(ValueError, match="predicted label 80 .* 80 classes"):
        ev.process(batch, [{"boxes": torch.tensor([[0., 0., 5., 5.]]), "scores": torch.tensor([0.5]),
                            "labels": torch.tensor([80])}])


def test_empty_predictions_score_zero(gt_json):
    ev = COCOEvaluator("coco_mini_val")
    ev.reset()
    assert ev.evaluate()["bbox/AP"] == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_ground_truth_from_records_scores_like_the_official_json(gt_json, seed):
    """On a clean dataset the records' ground truth (float32 boxes, json areas, renumbered ids) changes nothing."""
    from lazydet.evaluation.ground_truth import coco_ground_truth, evaluation_records

    dets = _random_detections(gt_json, seed)
    ours = evaluate_coco_detections(coco_ground_truth(evaluation_records("coco_mini_val"), "coco_mini_val"), dets)
    ref = _pycocotools(gt_json, dets)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=1e-4, nan_ok=True), k
