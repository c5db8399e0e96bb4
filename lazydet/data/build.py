"""Dataset and DataLoader builders used by recipes (``dataloader.train`` / ``dataloader.test``)."""
from __future__ import annotations

import contextlib
import itertools
import logging
import random
from typing import Callable, Sequence

import numpy as np
import torch
import torch.utils.data

from lazydet.utils import comm

from .catalog import DataError, MetadataCatalog, dataset_records
from .collate import DetectionCollator
from .samplers import InferenceSampler, TrainingSampler
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
        recs = dataset_records(name)
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
    """Applies ``mapper`` to ``records[i]``, for records whose image may turn out unreadable.

    ``replace_bad=True`` (training): such a record is replaced by a random other one, counted and warned
    about once per file. ``replace_bad=False`` (evaluation, every image must be accounted for): it becomes
    ``{"skipped": {"image_id", "file_name", "reason"}}``, which the collator passes on in
    ``batch["skipped"]`` and the evaluator counts, instead of a crash in a worker.
    """

    def __init__(self, records, mapper: Callable, replace_bad: bool = True, seed: int = 0):
        self.records, self.mapper, self.replace_bad = records, mapper, replace_bad
        self._rng = random.Random(seed)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int):
        return self._load(idx, self._rng)

    def seeded(self, idx: int, seed: int):
        """``self[idx]`` with the python, numpy and torch global RNGs seeded by ``seed`` (restored after): the
        training loader's augmentation becomes a function of the sample's seed, not of the worker's RNG."""
        with _seeded_global_rngs(seed):
            return self._load(idx, random.Random(seed))

    def _load(self, idx: int, rng: random.Random):
        for _ in range(_MAX_CONSECUTIVE_FAILURES):
            record = self.records[idx]
            try:
                return self.mapper(record)
            except DataError as e:
                if not self.replace_bad:
                    return {"skipped": {"image_id": int(record["image_id"]), "file_name": record["file_name"],
                                        "reason": str(e)}}
                if idx not in self._bad:
                    self._bad.add(idx)
                    logger.warning(f"skipping unreadable sample ({len(self._bad)} skipped so far in this "
                                   f"worker): {e}")
                idx = rng.randrange(len(self.records))
        raise DataError(f"{_MAX_CONSECUTIVE_FAILURES} consecutive samples failed to load; last index {idx}: "
                        f"check the image folder of the dataset")


@contextlib.contextmanager
def _seeded_global_rngs(seed: int):
    """torchvision v2 transforms draw from torch's global RNG (mappers may use ``random``/numpy too): seed all
    three inside, restore them after, so the training process's own random streams are untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed also seeds CUDA (100 us)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _wrap_records(dataset, serialize: bool):
    if isinstance(dataset, torch.utils.data.Dataset):
        return dataset
    if isinstance(dataset, (list, tuple)):
        return SerializedList(dataset) if serialize else list(dataset)
    raise TypeError(f"dataset must be a list of records or a torch Dataset, got {type(dataset).__name__}")


class _SampledBatches(torch.utils.data.IterableDataset):
    """Sampler indices -> batches of indices -> mapped, collated batches.

    Batches of indices are formed identically in every DataLoader worker (cheap: nothing is decoded); worker
    w of W maps batches ``start_batch + w``, ``+ W``, ..., which the DataLoader yields round-robin, so the
    stream of batches is the same for any number of workers and resuming at ``start_batch`` only skips
    indices. With ``landscape`` flags (aspect-ratio grouping) landscape and portrait records, by their json
    width/height as in detectron2, fill separate buckets."""

    def __init__(self, dataset: MapDataset, sampler: TrainingSampler, batch_size: int, collate: Callable,
                 landscape: np.ndarray | None = None):
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.collate, self.landscape = collate, landscape
        self.start_batch = 0

    def index_batches(self):
        """Infinite ``[(global_position, index), ...]`` batches of this rank."""
        stream = self.sampler.iter_with_positions()
        if self.landscape is None:
            while True:
                yield list(itertools.islice(stream, self.batch_size))
        buckets = {True: [], False: []}
        for pos, idx in stream:
            bucket = buckets[bool(self.landscape[idx])]
            bucket.append((pos, idx))
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for batch in itertools.islice(self.index_batches(), self.start_batch + worker, None, num_workers):
            yield self.collate([self.dataset.seeded(idx, self.sampler.sample_seed(pos)) for pos, idx in batch])


class TrainDataLoader(torch.utils.data.DataLoader):
    """The infinite training DataLoader, resumable: ``position`` counts the batches handed to the consumer
    (not those workers prefetched); ``load_state_dict`` makes the next batches those an uninterrupted loader
    would give after ``position`` batches, by skipping indices (no image is decoded)."""

    def __init__(self, stream: _SampledBatches, **kwargs):
        super().__init__(stream, batch_size=None, collate_fn=_identity, **kwargs)
        self.position = 0

    def __iter__(self):
        self.position = self.dataset.start_batch
        return self._counted(super().__iter__())

    def _counted(self, batches):
        for batch in batches:
            self.position += 1
            yield batch

    def state_dict(self) -> dict:
        """``{"position", "seed", "batch_size"}``: enough to resume the batch stream exactly."""
        return {"position": self.position, "seed": self.dataset.sampler.seed, "batch_size": self.dataset.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Make the next batches those an uninterrupted loader gives after ``state["position"]`` batches."""
        if int(state["batch_size"]) != self.dataset.batch_size:
            logger.warning(f"resuming the train loader with {self.dataset.batch_size} images per process, the "
                           f"checkpoint had {state['batch_size']}: the data order differs from the original run")
        self.dataset.sampler.seed = int(state["seed"])
        self.dataset.start_batch = self.position = int(state["position"])
        self.close()  # persistent workers hold a copy of the old start: the next iter() starts new ones

    def close(self) -> None:
        """Stops the persistent workers now. Left to the garbage collector inside reference cycles (a trainer
        and its hooks), their queues may be finalized first and each worker then costs a 5 s join timeout."""
        if self._iterator is not None:
            self._iterator._shutdown_workers()
            self._iterator = None


def _identity(x):
    return x


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _landscape_flags(records) -> np.ndarray:
    """Per record, whether it is wider than high (json width/height: grouping needs no image decoding)."""
    try:
        return np.fromiter((records[i]["width"] > records[i]["height"] for i in range(len(records))),
                           dtype=bool, count=len(records))
    except KeyError as e:
        raise DataError(f"aspect_ratio_grouping=True needs 'width' and 'height' in every dataset record; "
                        f"missing {e}") from None


def _per_rank_batch_size(total_batch_size: int) -> int:
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world != 0:
        raise DataError(f"total_batch_size={total_batch_size} must be a positive multiple of the number of "
                        f"processes ({world})")
    return total_batch_size // world


def build_detection_train_loader(dataset, mapper: Callable, total_batch_size: int, num_workers: int = 4,
                                 aspect_ratio_grouping: bool = False, size_divisibility: int = 0,
                                 fixed_size: Sequence[int] | None = None, seed: int | None = None,
                                 serialize: bool = True, pin_memory: bool = False):
    """Infinite loader of training batches; ``total_batch_size`` is split over the processes.

    The returned ``TrainDataLoader`` carries ``dataset_size`` (images) and ``total_batch_size``, and resumes
    exactly through ``state_dict()``/``load_state_dict()``. ``seed`` fixes the shuffling (same on every rank)
    and every sample's augmentation; None draws one shared seed (saved in the loader's state).
    """
    records = _wrap_records(dataset, serialize)
    per_rank = _per_rank_batch_size(total_batch_size)
    sampler = TrainingSampler(len(records), shuffle=True, seed=seed)
    stream = _SampledBatches(MapDataset(records, mapper, replace_bad=True, seed=sampler.seed), sampler, per_rank,
                             DetectionCollator(size_divisibility, fixed_size),
                             _landscape_flags(records) if aspect_ratio_grouping else None)
    loader = TrainDataLoader(stream, num_workers=num_workers, worker_init_fn=_seed_worker, pin_memory=pin_memory,
                             persistent_workers=num_workers > 0)
    loader.dataset_size = len(records)
    loader.total_batch_size = total_batch_size
    loader.per_rank_batch_size = per_rank
    return loader


def build_detection_test_loader(dataset, mapper: Callable, batch_size: int = 1, num_workers: int = 4,
                                size_divisibility: int = 0, fixed_size: Sequence[int] | None = None,
                                serialize: bool = True):
    """Finite loader; across ranks every image appears exactly once (``batch_size`` is per process). An image
    that cannot be read is not a crash: it is listed in its batch's ``"skipped"`` (see ``MapDataset``)."""
    records = _wrap_records(dataset, serialize)
    loader = torch.utils.data.DataLoader(MapDataset(records, mapper, replace_bad=False),
                                         sampler=InferenceSampler(len(records)), batch_size=batch_size,
                                         num_workers=num_workers, worker_init_fn=_seed_worker,
                                         collate_fn=DetectionCollator(size_divisibility, fixed_size))
    loader.dataset_size = len(records)
    return loader
