"""A tiny model and an infinite random loader for the SLURM/preemption tests (seconds per run on a CPU).

The loader draws every batch from torch's global RNG in the main process, so a run that resumes with the
restored RNG state sees exactly the batches an uninterrupted run would have seen.
"""
import time

import torch
from torch import nn


class ToyRegressor(nn.Module):
    """y = x @ w through a small MLP with dropout (dropout makes the result depend on the RNG state)."""

    def __init__(self, dim: int = 8, hidden: int = 16, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.num_classes = 1
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1))
        self.register_buffer("pixel_std", torch.ones(3, 1, 1))

    def forward(self, batch):
        pred = self.net(batch["x"])
        if self.training:
            return {"loss_mse": nn.functional.mse_loss(pred, batch["y"])}
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                for _ in range(len(pred))]


class ToyLoader:
    """Infinite batches {"x", "y"}; `step_sleep` seconds per batch make a run last long enough to signal it.
    `num_workers > 0` produces them in torch DataLoader worker processes (forked), like the real loaders:
    SLURM's signal reaches those processes too."""

    def __init__(self, batch_size: int = 4, dim: int = 8, step_sleep: float = 0.0, dataset_size: int = 64,
                 num_workers: int = 0):
        self.batch_size, self.dim, self.step_sleep = batch_size, dim, step_sleep
        self.dataset_size, self.total_batch_size = dataset_size, batch_size
        self.num_workers = num_workers
        self.w = torch.linspace(-1, 1, dim).reshape(dim, 1)

    def batches(self):
        while True:
            if self.step_sleep:
                time.sleep(self.step_sleep)
            x = torch.randn(self.batch_size, self.dim)
            yield {"x": x, "y": x @ self.w}

    def __iter__(self):
        if not self.num_workers:
            return self.batches()
        return iter(torch.utils.data.DataLoader(_Stream(self), batch_size=None, num_workers=self.num_workers))


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, loader: ToyLoader):
        self.loader = loader

    def __iter__(self):
        return self.loader.batches()


class ToyTestLoader:
    """A finite test set of `num_images` ids, sharded over ranks (rank r gets r, r+W, ...), like the real
    inference sampler: across ranks every image is seen exactly once."""

    def __init__(self, num_images: int = 10, dim: int = 8):
        self.num_images, self.dim = num_images, dim

    def _ids(self):
        from lazydet.utils import comm

        return list(range(comm.get_rank(), self.num_images, comm.get_world_size()))

    def __len__(self):
        return len(self._ids())

    def __iter__(self):
        for i in self._ids():
            yield {"x": torch.randn(1, self.dim), "targets": [{"image_id": i}]}


class ToyCountEvaluator:
    """Counts the test images each rank processed and gathers them on the main process: the metrics
    `toy/images_seen` (distinct ids over all ranks) and `toy/ranks_contributing` prove the evaluation ran
    on every rank (a rank-0-only evaluation would see only rank 0's shard, or hang)."""

    def reset(self):
        self.ids = []

    def process(self, batch, outputs):
        self.ids += [t["image_id"] for t in batch["targets"]]

    def evaluate(self):
        from lazydet.utils import comm

        per_rank = comm.gather(self.ids)
        if not comm.is_main_process():
            return {}
        return {"toy/images_seen": float(len({i for ids in per_rank for i in ids})),
                "toy/ranks_contributing": float(sum(1 for ids in per_rank if ids))}
