"""A toy regression task for engine tests: a tiny MLP whose train-mode output is a loss dict, an infinite
deterministic loader that shards each global batch across ranks and can restore its position, a finite
test loader and an evaluator."""
import math

import torch
from torch import nn

from lazydet.utils import comm


def toy_data(n: int = 64, dim: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 1, generator=g)
    y = x @ w + 0.05 * torch.randn(n, 1, generator=g)
    return x, y


class ToyRegressor(nn.Module):
    def __init__(self, dim: int = 4, hidden: int = 16, dropout: float = 0.0, num_classes: int = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))
        if num_classes is not None:
            self.num_classes = num_classes

    def forward(self, batch):
        pred = self.net(batch["x"])
        if self.training:
            err = pred.float() - batch["y"]
            return {"loss_mse": err.pow(2).mean(), "loss_l1": 0.1 * err.abs().mean()}
        return [{"pred": p} for p in pred]


class ToyLoader:
    """Infinite: global batch k holds `total_batch_size` samples of a per-epoch permutation; rank r gets
    its contiguous slice, so N ranks together see exactly the batch one process would."""

    def __init__(self, n: int = 64, dim: int = 4, total_batch_size: int = 8, seed: int = 0):
        self.x, self.y = toy_data(n, dim, seed)
        self.dataset_size = n
        self.total_batch_size = total_batch_size
        self.seed = seed
        self.position = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = int(state["position"])

    def _indices(self, k: int) -> torch.Tensor:
        per_epoch = math.ceil(self.dataset_size / self.total_batch_size)
        epoch, j = divmod(k, per_epoch)
        perm = torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.seed + epoch))
        perm = torch.cat([perm, perm])  # the last batch of an epoch wraps around
        idx = perm[j * self.total_batch_size:(j + 1) * self.total_batch_size]
        per_rank = self.total_batch_size // comm.get_world_size()
        r = comm.get_rank()
        return idx[r * per_rank:(r + 1) * per_rank]

    def __iter__(self):
        while True:
            idx = self._indices(self.position)
            self.position += 1
            yield {"x": self.x[idx], "y": self.y[idx]}


def toy_test_loader(n: int = 64, dim: int = 4, seed: int = 0, batch_size: int = 16):
    """Finite list of batches, each rank a disjoint share."""
    x, y = toy_data(n, dim, seed)
    idx = torch.arange(n)[comm.get_rank()::comm.get_world_size()]
    return [{"x": x[i], "y": y[i], "targets": [{"y": v} for v in y[i]]} for i in idx.split(batch_size)]


class ToyEvaluator:
    """`toy/mse` over the test set (gathered to the main process); {} on the others."""

    def reset(self):
        self._err = []

    def process(self, batch, outputs):
        pred = torch.stack([o["pred"] for o in outputs])
        self._err.append((pred - batch["y"]).pow(2).sum().item())
        self._n = getattr(self, "_n", 0) + len(pred)

    def evaluate(self):
        parts = comm.gather((sum(self._err), getattr(self, "_n", 0)))
        if not comm.is_main_process():
            return {}
        total, n = map(sum, zip(*parts))
        return {"toy/mse": total / max(n, 1), "toy/neg_mse": -total / max(n, 1)}


def make_trainer(max_iter: int = 10, lr: float = 0.01, total_batch_size: int = 8, dropout: float = 0.0,
                 seed: int = 0, **trainer_kwargs):
    """A Trainer over the toy task without any config (hooks are added by the caller)."""
    from lazydet.engine import Trainer
    from lazydet.solver import get_default_optimizer_params

    torch.manual_seed(seed)
    model = ToyRegressor(dropout=dropout)
    optimizer = torch.optim.AdamW(get_default_optimizer_params(model, base_lr=lr, weight_decay=0.01), lr=lr)
    loader = ToyLoader(total_batch_size=total_batch_size)
    return Trainer(model, loader, optimizer, max_iter=max_iter, device="cpu", **trainer_kwargs)
