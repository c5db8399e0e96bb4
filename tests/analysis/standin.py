"""A stand-in model for ablation tests: it runs out of memory on its first forward, like a too-big cell."""
import torch


class OutOfMemoryModel(torch.nn.Module):
    """Accepts any recipe arguments; forward raises torch.OutOfMemoryError (what CUDA raises when full)."""

    def __init__(self, **ignored):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        raise torch.OutOfMemoryError("simulated: tried to allocate 20.00 GiB")
