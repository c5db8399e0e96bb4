"""Two real gloo processes: the evaluator gathers both ranks' predictions (AP 100 on rank 0, {} on
rank 1), the test loader splits the images, and the training loader splits total_batch_size."""
import os

import pytest

from tests.two_ranks import on_two_gloo_ranks


def _worker(rank, out_dir):
    from lazydet.data import (DetrDatasetMapper, build_detection_test_loader, build_detection_train_loader,
                              detr_test_augmentation, get_detection_dataset_dicts)
    from lazydet.evaluation import COCOEvaluator
    from tests.data.data_test_utils import ground_truth_outputs

    records = get_detection_dataset_dicts("coco_mini_val", filter_empty=False)
    loader = build_detection_test_loader(records, DetrDatasetMapper(detr_test_augmentation(None), False),
                                         batch_size=8, num_workers=0)
    ev = COCOEvaluator("coco_mini_val", output_dir=out_dir)
    ids = []
    for batch in loader:
        ids.extend(t["image_id"] for t in batch["targets"])
        ev.process(batch, ground_truth_outputs(batch))
    results = ev.evaluate()
    train = build_detection_train_loader(records, DetrDatasetMapper(detr_test_augmentation(None)),
                                         total_batch_size=4, num_workers=0, seed=None)
    first = next(iter(train))
    return (ids, results.get("bbox/AP"), len(results), len(first["targets"]),
            train.batch_sampler is None and train.dataset.sampler.seed)


def test_two_ranks(tmp_path):
    got = on_two_gloo_ranks(_worker, tmp_path, str(tmp_path))
    (ids0, ap0, n0, bs0, seed0), (ids1, ap1, n1, bs1, seed1) = got[0], got[1]
    assert not set(ids0) & set(ids1) and len(ids0) + len(ids1) == 16
    assert ap0 == pytest.approx(100.0) and n0 == 86
    assert ap1 is None and n1 == 0
    assert bs0 == bs1 == 2  # total_batch_size 4 over 2 ranks
    assert seed0 == seed1  # the shuffling seed is shared
    assert os.path.isfile(tmp_path / "coco_instances_results.json")
