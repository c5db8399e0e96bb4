"""Two real gloo processes: the evaluator gathers both ranks' predictions (AP 100 on rank 0, {} on
rank 1), the test loader splits the images, and the training loader splits total_batch_size."""
import multiprocessing as mp
import os

import pytest
import torch
import torch.distributed as dist



def _worker(rank, init_file, out_dir, queue):
    # a forked child must not enter the OpenMP pool the parent's tests started (libgomp is not fork-safe): one
    # thread runs ATen's parallel loops inline
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
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
        queue.put((rank, ids, results.get("bbox/AP"), len(results), len(first["targets"]),
                   train.batch_sampler is None and train.dataset.sampler.seed))
        dist.destroy_process_group()
    except Exception as e:  # report instead of hanging the test
        queue.put((rank, repr(e)))


def test_two_ranks(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(tmp_path / "init"), str(tmp_path), queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict()
    for _ in range(2):
        item = queue.get(timeout=240)
        got[item[0]] = item
    for p in procs:
        p.join(30)
    assert all(len(v) == 6 for v in got.values()), got
    (_, ids0, ap0, n0, bs0, seed0), (_, ids1, ap1, n1, bs1, seed1) = got[0], got[1]
    assert not set(ids0) & set(ids1) and len(ids0) + len(ids1) == 16
    assert ap0 == pytest.approx(100.0) and n0 == 86
    assert ap1 is None and n1 == 0
    assert bs0 == bs1 == 2  # total_batch_size 4 over 2 ranks
    assert seed0 == seed1  # the shuffling seed is shared
    assert os.path.isfile(tmp_path / "coco_instances_results.json")
