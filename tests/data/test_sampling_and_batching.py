import itertools

import numpy as np
import pytest
import torch

from lazydet.data import (DetectionCollator, InferenceSampler, SerializedList, TrainingSampler,
                          build_detection_train_loader, build_detection_test_loader, get_detection_dataset_dicts,
                          register_synthetic_shapes, DetrDatasetMapper, resize_flip_augmentation, detr_test_augmentation)


@pytest.mark.parametrize("size", [0, 1, 7, 10])
def test_inference_sampler_covers_each_index_once_across_two_ranks(size):
    parts = [list(InferenceSampler(size, rank=r, world_size=2)) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(size))
    assert abs(len(parts[0]) - len(parts[1])) <= 1


def test_training_sampler_ranks_disjoint_per_epoch_and_seeded():
    size = 11
    streams = [list(itertools.islice(iter(TrainingSampler(size, seed=5, rank=r, world_size=2)), 30)) for r in range(2)]
    # interleaving the two ranks reconstructs the shared stream: each epoch is a permutation
    merged = [x for pair in zip(*streams) for x in pair]
    for e in range(len(merged) // size):
        assert sorted(merged[e * size:(e + 1) * size]) == list(range(size))
    again = list(itertools.islice(iter(TrainingSampler(size, seed=5, rank=0, world_size=2)), 30))
    other = list(itertools.islice(iter(TrainingSampler(size, seed=6, rank=0, world_size=2)), 30))
    assert again == streams[0] and other != streams[0]


def test_serialized_list_round_trip():
    items = [{"a": i, "boxes": np.arange(i * 4, dtype=np.float32).reshape(-1, 4), "s": "x" * i} for i in range(50)]
    sl = SerializedList(items)
    assert len(sl) == 50
    for i in (0, 1, 49, -1):
        got, want = sl[i], items[i]
        assert got["a"] == want["a"] and got["s"] == want["s"]
        np.testing.assert_array_equal(got["boxes"], want["boxes"])
    with pytest.raises(IndexError):
        sl[50]


def _sample(h, w):
    return {"image": torch.full((3, h, w), 7, dtype=torch.uint8), "target": {"image_id": h}}


def test_collate_pads_with_mask_and_divisibility():
    batch = DetectionCollator(size_divisibility=14)([_sample(20, 30), _sample(25, 10)])
    assert batch["images"].shape == (2, 3, 28, 42) and batch["pixel_mask"].shape == (2, 28, 42)
    assert batch["pixel_mask"][0].sum() == 20 * 30 and batch["pixel_mask"][1].sum() == 25 * 10
    assert (batch["images"][0][:, ~batch["pixel_mask"][0]] == 0).all()
    assert (batch["images"][1][:, batch["pixel_mask"][1]] == 7).all()
    assert DetectionCollator(fixed_size=(32, 32))([_sample(20, 30)])["images"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="exceeds collate fixed_size"):
        DetectionCollator(fixed_size=(16, 16))([_sample(20, 30)])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    register_synthetic_shapes("t_loader_shapes", num_images=12, image_size=64, seed=0,
                              root=str(tmp_path_factory.mktemp("ds")))
    return "t_loader_shapes"


@pytest.mark.parametrize("num_workers,grouping", [(0, False), (2, True)])
def test_train_loader_batches_follow_contract(shapes, num_workers, grouping):
    loader = build_detection_train_loader(get_detection_dataset_dicts(shapes),
                                          DetrDatasetMapper(resize_flip_augmentation([50, 64, 80])),
                                          total_batch_size=4, num_workers=num_workers,
                                          aspect_ratio_grouping=grouping, seed=0)
    assert loader.dataset_size == 12 and loader.total_batch_size == 4
    for batch in itertools.islice(loader, 5):  # infinite: more batches than one epoch
        assert batch["images"].dtype == torch.uint8 and batch["images"].shape[:2] == (4, 3)
        assert batch["pixel_mask"].dtype == torch.bool
        for i, t in enumerate(batch["targets"]):
            h, w = t["size"].tolist()
            assert batch["pixel_mask"][i].sum() == h * w
            assert t["labels"].dtype == torch.int64 and t["boxes"].dtype == torch.float32
            assert (t["boxes"] >= 0).all() and (t["boxes"] <= 1).all()


def test_total_batch_size_must_divide(shapes, monkeypatch):
    from lazydet.utils import comm

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="total_batch_size=3 must be a positive multiple of the number of processes"):
        build_detection_train_loader(get_detection_dataset_dicts(shapes), DetrDatasetMapper(), total_batch_size=3,
                                     num_workers=0, seed=0)


def test_test_loader_sees_every_image_once(shapes):
    loader = build_detection_test_loader(get_detection_dataset_dicts(shapes, filter_empty=False),
                                         DetrDatasetMapper(detr_test_augmentation(None), is_train=False), batch_size=5,
                                         num_workers=0)
    ids = [t["image_id"] for b in loader for t in b["targets"]]
    assert sorted(ids) == list(range(1, 13))
