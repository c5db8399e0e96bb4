"""Dataset and DataLoader builders used by recipes (``dataloader.train`` / ``dataloader.test``)."""
from __future__ import annotations

import itertools
import logging
import random
from typing import Callable, Sequence

import numpy as np
import torch
import torch.utils.data

from .catalog import DataError, DatasetCatalog, MetadataCatalog
from .collate import DetectionCollator
from .samplers import InferenceSampler, TrainingSampler, rank_and_world_size
from .serialize import SerializedList

logger = logging.getLogger(__name__)

_MAX_CONSECUTIVE_FAILURES = 20


def _as_name_list(names) -> list[str]:
    if isinstance(names, str):
        return [names]
    names = list(names)
    if not names:
        raise DataError("get_detection_dataset_dicts: no dataset names given")
    return [str(n) for n in names]


def get_detection_dataset_dicts(names, filter_empty: bool = True) -> list[dict]:
    """Records of one or several registered datasets (concatenated).

    ``filter_empty`` drops images without a non-crowd box (training only: evaluation must keep them).
    """
    names = _as_name_list(names)
    records, classes = [], None
    for name in names:
        recs = DatasetCatalog.get(name)
        if not recs:
            raise DataError(f"dataset {name!r} has no usable images (see the warnings above)")
        these = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and these is not None and these != classes:
            raise DataError(f"datasets {names} have different thing_classes; they cannot be mixed")
        classes = these or classes
        records.extend(recs)
    if filter_empty:
        before = len(records)
        records = [r for r in records if (~np.asarray(r["iscrowd"], dtype=bool)).any()]
        if len(records) < before:
            logger.info(f"removed {before - len(records)} of {before} images without non-crowd boxes "
                        f"from {names} (filter_empty=True)")
    return records


class MapDataset(torch.utils.data.Dataset):
    """Applies ``mapper`` to ``records[i]``. With ``skip_bad`` a record whose image cannot be read is
    replaced by a random other one, counted and warned about once per file (training); without it the
    error propagates (evaluation must see every image)."""

    def __init__(self, records, mapper: Callable, skip_bad: bool = True, seed: int = 0):
        self.records, self.mapper, self.skip_bad = records, mapper, skip_bad
        self._rng = random.Random(seed)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int):
        for _ in range(_MAX_CONSECUTIVE_FAILURES):
            try:
                return self.mapper(self.records[idx])
            except DataError as e:
                if not self.skip_bad:
                    raise
                if idx not in self._bad:
                    self._bad.add(idx)
                    logger.warning(f"skipping unreadable sample ({len(self._bad)} skipped so far in this "
                                   f"worker): {e}")
                idx = self._rng.randrange(len(self.records))
        raise DataError(f"{_MAX_CONSECUTIVE_FAILURES} consecutive samples failed to load; last index {idx}: "
                        f"check the image folder of the dataset")


def _wrap_records(dataset, serialize: bool):
    if isinstance(dataset, torch.utils.data.Dataset):
        return dataset
    if isinstance(dataset, (list, tuple)):
        return SerializedList(dataset) if serialize else list(dataset)
    raise TypeError(f"dataset must be a list of records or a torch Dataset, got {type(dataset).__name__}")


class _SampledBatches(torch.utils.data.IterableDataset):
    """Sampler indices -> mapped samples -> batches, sharded over DataLoader workers.
    With aspect-ratio grouping, landscape and portrait images fill separate buckets."""

    def __init__(self, dataset, sampler, batch_size: int, collate: Callable, aspect_ratio_grouping: bool):
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.collate, self.aspect_ratio_grouping = collate, aspect_ratio_grouping

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        indices = iter(self.sampler)
        if info is not None and info.num_workers > 1:
            indices = itertools.islice(indices, info.id, None, info.num_workers)
        buckets = {True: [], False: []}
        for idx in indices:
            sample = self.dataset[idx]
            h, w = sample["image"].shape[-2:]
            bucket = buckets[bool(w > h) if self.aspect_ratio_grouping else True]
            bucket.append(sample)
            if len(bucket) == self.batch_size:
                yield self.collate(bucket[:])
                bucket.clear()


def _identity(x):
    return x


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _per_rank_batch_size(total_batch_size: int) -> int:
    _, world = rank_and_world_size()
    if total_batch_size <= 0 or total_batch_size % world != 0:
        raise DataError(f"total_batch_size={total_batch_size} must be a positive multiple of the number of "
                        f"processes ({world})")
    return total_batch_size // world


def build_detection_train_loader(dataset, mapper: Callable, total_batch_size: int, num_workers: int = 4,
                                 aspect_ratio_grouping: bool = False, size_divisibility: int = 0,
                                 fixed_size: Sequence[int] | None = None, seed: int | None = None,
                                 serialize: bool = True, pin_memory: bool = False):
    """Infinite loader of training batches; ``total_batch_size`` is split over the processes.

    The returned DataLoader carries ``dataset_size`` (images) and ``total_batch_size``.
    ``seed`` fixes the shuffling (same on every rank); None draws one shared seed.
    """
    records = _wrap_records(dataset, serialize)
    per_rank = _per_rank_batch_size(total_batch_size)
    sampler = TrainingSampler(len(records), shuffle=True, seed=seed)
    stream = _SampledBatches(MapDataset(records, mapper, skip_bad=True, seed=sampler.seed), sampler, per_rank,
                             DetectionCollator(size_divisibility, fixed_size), aspect_ratio_grouping)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                                         worker_init_fn=_seed_worker, pin_memory=pin_memory,
                                         persistent_workers=num_workers > 0)
    loader.dataset_size = len(records)
    loader.total_batch_size = total_batch_size
    loader.per_rank_batch_size = per_rank
    return loader


def build_detection_test_loader(dataset, mapper: Callable, batch_size: int = 1, num_workers: int = 4,
                                size_divisibility: int = 0, fixed_size: Sequence[int] | None = None,
                                serialize: bool = True):
    """Finite loader; across ranks every image appears exactly once (``batch_size`` is per process)."""
    records = _wrap_records(dataset, serialize)
    loader = torch.utils.data.DataLoader(MapDataset(records, mapper, skip_bad=False),
                                         sampler=InferenceSampler(len(records)), batch_size=batch_size,
                                         num_workers=num_workers, worker_init_fn=_seed_worker,
                                         collate_fn=DetectionCollator(size_divisibility, fixed_size))
    loader.dataset_size = len(records)
    return loader
