"""The evaluator's ground truth is the loader's validated records: ground truth as predictions scores AP 100 on
every dataset the loader accepts, whatever it had to skip; unreadable images are skipped and counted."""
import json
import logging
import math
import os

import pytest

from omegaconf import OmegaConf

from lazydet.data import (DetrDatasetMapper, build_detection_test_loader, check_datasets, get_detection_dataset_dicts,
                          register_coco_instances)
from lazydet.evaluation import COCOEvaluator, evaluate_coco_detections, inference_on_dataset
from tests.data.data_test_utils import GroundTruthModel, save_image, write_coco

GOOD = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10], "iscrowd": 0, "area": 200},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 12, 25, 20], "iscrowd": 0, "area": 500},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [2, 3, 40, 30], "iscrowd": 0, "area": 1200},
        {"id": 4, "image_id": 2, "category_id": 7, "bbox": [20, 20, 30, 15], "iscrowd": 1, "area": 450}]

# one kind of annotation the loader must skip (or repair) per dataset, with the id it must name
KINDS = {
    "duplicate id": ({"id": 2, "image_id": 2, "category_id": 7, "bbox": [44, 2, 10, 10]}, "duplicate annotation ids"),
    "negative width": ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [10, 10, -5, 8]}, "negative width/height"),
    "zero height": ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [10, 10, 5, 0]}, "negative width/height"),
    "outside the image": ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [70, 50, 5, 5]}, "entirely outside"),
    "partly outside (clipped)": ({"id": 9, "image_id": 2, "category_id": 7, "bbox": [50, 30, 30, 30]}, "(clipped)"),
    "NaN bbox": ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 2, math.nan, 4]}, "not 4 finite numbers"),
    "string bbox": ({"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 2, "3", 4]}, "not 4 finite numbers"),
    "unknown category": ({"id": 9, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4]}, "category id not in"),
    "absent image id": ({"id": 9, "image_id": 42, "category_id": 3, "bbox": [1, 2, 3, 4]}, "absent from 'images'"),
}


def _register(tmp_path, name, extra_annotations=(), broken_image=False):
    images = [{"id": 1, "file_name": "1.png", "height": 40, "width": 60},
              {"id": 2, "file_name": "2.png", "height": 40, "width": 60},
              {"id": 3, "file_name": "3.png", "height": 40, "width": 60}]
    anns = GOOD + [{"id": 5, "image_id": 3, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 0, "area": 100}]
    js, root = write_coco(tmp_path, images, anns + [dict(a, iscrowd=0, area=1) for a in extra_annotations])
    for i in (1, 2, 3):
        save_image(root, f"{i}.png", 40, 60)
    if broken_image:
        with open(os.path.join(root, "3.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n but not really")
    register_coco_instances(name, js, root)
    return js


def _score_ground_truth(name, tmp_path):
    loader = build_detection_test_loader(get_detection_dataset_dicts(name, filter_empty=False),
                                         DetrDatasetMapper(is_train=False), batch_size=2, num_workers=0)
    return inference_on_dataset(GroundTruthModel(), loader, COCOEvaluator(name, output_dir=str(tmp_path)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_ground_truth_as_predictions_scores_100_whatever_the_loader_skipped(tmp_path, caplog, kind):
    ann, reason = KINDS[kind]
    name = f"t_gt_{kind.replace(' ', '_')}"
    js = _register(tmp_path, name, [ann])
    with caplog.at_level(logging.WARNING, logger="lazydet.data.coco"):
        results = _score_ground_truth(name, tmp_path)
    assert results["bbox/AP"] == pytest.approx(100.0) and results["bbox/AP50"] == pytest.approx(100.0)
    (line,) = [r.getMessage() for r in caplog.records]  # reported once, one line naming the file and the id
    assert reason in line and js in line and line.endswith(f": {ann['id']}")
    if kind == "duplicate id":  # scored against the raw json instead, the duplicate corrupted the ground truth
        dets = json.load(open(tmp_path / "coco_instances_results.json"))
        assert evaluate_coco_detections(js, dets)["bbox/AP"] < 99


def test_unreadable_image_is_skipped_and_counted_in_evaluation(tmp_path, caplog):
    _register(tmp_path, "t_gt_broken", broken_image=True)
    with caplog.at_level(logging.INFO, logger="lazydet.evaluation"):
        results = _score_ground_truth("t_gt_broken", tmp_path)
    assert results["bbox/AP"] == pytest.approx(100.0)  # scored over the two readable images
    assert results["bbox/skipped_images"] == 1
    assert "3.png (id 3) not scored: cannot decode image" in caplog.text
    assert "1 image(s) could not be read and are not scored" in caplog.text  # in the AP table


def test_images_the_start_check_left_out_are_counted_too(tmp_path):
    _register(tmp_path, "t_gt_checked", broken_image=True)
    (bad,) = check_datasets(OmegaConf.create({"dataloader": {"evaluator": {"dataset_name": "t_gt_checked"}}}))[
        "t_gt_checked"]
    assert bad.endswith("3.png")
    results = _score_ground_truth("t_gt_checked", tmp_path)
    assert results["bbox/AP"] == pytest.approx(100.0) and results["bbox/skipped_images"] == 1
