"""Index samplers that know about distributed ranks (``lazydet.utils.comm``; one process when not initialised)."""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.utils.data

from lazydet.utils import comm


class TrainingSampler(torch.utils.data.Sampler):
    """Infinite stream of indices: every rank draws the same seeded permutations and keeps every
    ``world_size``-th index from position ``rank``, so ranks see disjoint images each epoch."""

    def __init__(self, size: int, shuffle: bool = True, seed: int | None = None,
                 rank: int | None = None, world_size: int | None = None):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size={size}")
        self.size, self.shuffle = size, shuffle
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        self.seed = comm.shared_random_seed() if seed is None else int(seed)

    def _infinite_indices(self):
        g = torch.Generator().manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=g).tolist()
            else:
                yield from range(self.size)

    def __iter__(self):
        return itertools.islice(self._infinite_indices(), self.rank, None, self.world_size)

    def iter_with_positions(self):
        """``(global_position, index)`` pairs of this rank's stream; the position counts samples of the stream
        shared by all ranks, so ``sample_seed(position)`` is the same whatever the workers, ranks or resumes."""
        for pos, idx in enumerate(self):
            yield pos * self.world_size + self.rank, idx

    def sample_seed(self, global_position: int) -> int:
        """Seed of one sample's augmentation: a hash of (``seed``, position), 32 bits."""
        return int(np.random.SeedSequence((self.seed % 2**64, global_position)).generate_state(1)[0])


class InferenceSampler(torch.utils.data.Sampler):
    """Contiguous shard per rank; the shards partition ``range(size)``: each index exactly once."""

    def __init__(self, size: int, rank: int | None = None, world_size: int | None = None):
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        per, extra = divmod(size, world_size)
        begin = rank * per + min(rank, extra)
        self.indices = range(begin, begin + per + (1 if rank < extra else 0))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
