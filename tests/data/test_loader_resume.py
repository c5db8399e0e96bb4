"""Exact resume of the training loader: after load_state_dict the batches (images and targets) are those an
uninterrupted loader gives at that point, for 0 and 2 workers; augmentation depends on (seed, position) only."""
import itertools
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lazydet
from lazydet.config import LazyConfig
from lazydet.data import DetrDatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
from lazydet.data.synthetic import register_synthetic_shapes
from lazydet.data.transforms import detr_train_augmentation
from lazydet.engine import HookBase, StopTraining, default_setup
from scripts.train_net import build_trainer

NAME = "synthetic_shapes_loader_resume_test"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    register_synthetic_shapes(NAME, num_images=12, image_size=48, root=str(tmp_path_factory.mktemp("datasets")))
    return get_detection_dataset_dicts(NAME)


def random_mapper():
    """flip, random-choice multi-scale resize / resize + random crop + resize: all torch-RNG draws"""
    return DetrDatasetMapper(detr_train_augmentation(min_sizes=(32, 40, 48, 56), max_size=100,
                                                     crop_resize_sizes=(40, 48), crop_size=(24, 40)))


def loader(records, num_workers=0, seed=3, mapper=None):
    return build_detection_train_loader(records, mapper or random_mapper(), total_batch_size=2,
                                        num_workers=num_workers, seed=seed)


def take(it, n):
    return list(itertools.islice(it, n))


def assert_same(a, b, where="batch"):
    """Recursive exact equality of collated batches (tensors, lists, dicts, plain values)."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference(records):
    """9 batches of an uninterrupted in-process loader (12 images, batch 2: the stream crosses an epoch)."""
    return take(iter(loader(records)), 9)


def test_reference_stream_is_random(reference):
    sizes = {tuple(s.tolist()) for b in reference for s in (t["size"] for t in b["targets"])}
    assert len(sizes) > 3  # the augmentation really varies, so the equalities below can fail
    ids = [t["image_id"] for b in reference[:6] for t in b["targets"]]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 12  # first epoch: a permutation


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_loader_continues_the_uninterrupted_stream(records, reference, num_workers):
    first = loader(records, num_workers)
    it = iter(first)
    head = take(it, 4)
    state = first.state_dict()
    assert state["position"] == 4  # batches handed out, not those the workers prefetched
    for i, (a, b) in enumerate(zip(head, reference)):
        assert_same(a, b, f"batch {i}")  # the stream does not depend on the number of workers
    del it

    resumed = loader(records, num_workers, seed=None)  # the seed comes back from the state
    resumed.load_state_dict(state)
    tail = take(iter(resumed), 5)
    for i, (a, b) in enumerate(zip(tail, reference[4:])):
        assert_same(a, b, f"resumed batch {4 + i}")
    assert resumed.state_dict() == {**state, "position": 9}


def test_load_state_dict_restarts_started_workers(records, reference):
    resumed = loader(records, num_workers=2)
    take(iter(resumed), 1)  # persistent workers now exist with the old start
    resumed.load_state_dict({"position": 7, "seed": 3, "batch_size": 2})
    for i, (a, b) in enumerate(zip(take(iter(resumed), 2), reference[7:])):
        assert_same(a, b, f"batch {7 + i}")


def test_skipping_ahead_decodes_nothing(records, reference):
    mapper = random_mapper()
    calls = []

    def counting(record):
        calls.append(record["image_id"])
        return mapper(record)

    resumed = loader(records, mapper=counting)
    resumed.load_state_dict({"position": 8, "seed": 3, "batch_size": 2})
    assert_same(next(iter(resumed)), reference[8])
    assert calls == [t["image_id"] for t in reference[8]["targets"]]


def test_sample_augmentation_depends_on_seed_and_position_only(records):
    """Another seed changes the augmentation; loading data does not touch the caller's global RNGs."""
    other = take(iter(loader(records, seed=4)), 2)
    it = iter(loader(records))
    state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = take(it, 2)
    assert torch.equal(state[0], torch.get_rng_state()) and np.array_equal(state[1], np.random.get_state()[1])
    assert not all(torch.equal(x["images"], y["images"]) if x["images"].shape == y["images"].shape else False
                   for x, y in zip(a, other))


def test_aspect_ratio_groups_from_record_sizes_and_resume(records):
    """Grouping by json width/height: batches are single-orientation, and resume skips the same way."""
    flipped = [dict(r) for r in records]
    for r in flipped[::3]:  # pretend a third of the records are landscape (only the index stream is read)
        r["width"] += 10
    ld = build_detection_train_loader(flipped, random_mapper(), total_batch_size=2, num_workers=0, seed=3,
                                      aspect_ratio_grouping=True)
    stream = ld.dataset
    batches = take(stream.index_batches(), 10)
    for batch in batches:
        assert len({bool(stream.landscape[idx]) for _, idx in batch}) == 1
        assert len(batch) == 2
    positions = [p for b in batches for p, _ in b]
    assert sorted(positions) != positions  # grouping really reorders the stream
    assert len(set(positions)) == len(positions)


QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(lazydet.__file__)),
                          "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py")
TINY_DINO = ["model.backbone.net.depth=1", "model.backbone.net.embed_dim=48", "model.backbone.net.img_size=56",
             "model.backbone.out_channels=32", "model.embed_dim=32", "model.position_embedding.num_pos_feats=16",
             "model.transformer.encoder.num_layers=1", "model.transformer.decoder.num_layers=2",
             "model.transformer.encoder.feedforward_dim=64", "model.transformer.decoder.feedforward_dim=64",
             "model.num_queries=10", "model.dn_number=4", "model.select_box_nums_for_evaluation=10",
             "dataloader.train.mapper.augmentation.min_sizes=[42,56,70]",
             "dataloader.test.mapper.augmentation.short_size=56", "dataloader.test.num_workers=0",
             f"dataloader.train.dataset.names={NAME}", f"dataloader.test.dataset.names={NAME}",
             "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=2",
             "train.max_iter=6", "train.checkpointer.period=3", "train.eval_period=0", "train.log_period=1"]


class CrashAfter(HookBase):
    """Stands for a preemption without a final save: iterations after the last checkpoint are lost."""

    def __init__(self, it):
        self.it = it

    def after_step(self):
        if self.trainer.iter == self.it:
            raise StopTraining("simulated crash")


def train_tiny_dino(out_dir, resume=False, hooks=()):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(QUICKSTART), [f"train.output_dir={out_dir}", *TINY_DINO])
    args = SimpleNamespace(resume=resume, eval_only=False)
    default_setup(cfg, args)
    trainer = build_trainer(args, cfg)
    trainer.register_hooks(list(hooks))
    trainer.train()
    trainer.data_loader.close()
    return trainer


def final_weights(out_dir):
    return torch.load(os.path.join(out_dir, "model_final.pth"), weights_only=True)["model"]


def test_train_net_resume_of_tiny_dino_equals_uninterrupted(records, tmp_path):
    """Real DINO recipe, real loader with 2 workers and random augmentation, denoising noise, AdamW."""
    train_tiny_dino(tmp_path / "full")
    crashed = train_tiny_dino(tmp_path / "resumed", hooks=[CrashAfter(4)])
    assert crashed.stop_reason == "simulated crash"
    assert (tmp_path / "resumed" / "last_checkpoint").read_text().strip() == "model_0000002.pth"
    resumed = train_tiny_dino(tmp_path / "resumed", resume=True)
    assert resumed.start_iter == 3 and resumed.iter == 6
    full, weights = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    for k in full:
        torch.testing.assert_close(weights[k], full[k], rtol=0, atol=1e-6, msg=k)


def test_sample_positions_index_the_stream_shared_by_all_ranks():
    """Rank r of W sees global positions r, r+W, ...: the image and the seed at a position match one process."""
    from lazydet.data.samplers import TrainingSampler

    single = list(itertools.islice(TrainingSampler(7, seed=5, rank=0, world_size=1).iter_with_positions(), 20))
    for rank in range(3):
        sampler = TrainingSampler(7, seed=5, rank=rank, world_size=3)
        for pos, idx in itertools.islice(sampler.iter_with_positions(), 6):
            assert single[pos] == (pos, idx)
            assert sampler.sample_seed(pos) == TrainingSampler(7, seed=5, rank=0, world_size=1).sample_seed(pos)
    assert len({TrainingSampler(7, seed=5).sample_seed(p) for p in range(100)}) == 100
