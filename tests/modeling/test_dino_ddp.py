"""Two real gloo processes train the tiny DINO with denoising off under DDP with
find_unused_parameters=False (the engine's default): every parameter, label_enc included, must take part in
each step, or DDP fails on the second iteration."""
import torch
from torch.nn.parallel import DistributedDataParallel

from test_dino_model import tiny_batch, tiny_dino
from tests.two_ranks import on_two_gloo_ranks


def _worker(rank):
    torch.manual_seed(0)  # same initial weights on both ranks
    model = DistributedDataParallel(tiny_dino(dn_number=0).train(), find_unused_parameters=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(3):
        losses = model(tiny_batch(seed=10 * rank + step))  # different images on each rank
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    label_enc = model.module.label_enc.weight.grad
    checksum = sum(p.grad.double().sum().item() for p in model.parameters() if p.grad is not None)
    return sorted(losses), label_enc is not None and bool((label_enc == 0).all()), checksum


def test_two_ranks_without_denoising_and_without_unused_parameter_search(tmp_path):
    got = on_two_gloo_ranks(_worker, tmp_path)
    (names0, zero0, sum0), (names1, zero1, sum1) = got[0], got[1]
    assert names0 == names1 and not any("_dn" in n for n in names0)
    assert zero0 and zero1  # label_enc has a gradient, and it is exactly zero
    assert sum0 == sum1  # gradients were all-reduced: identical on both ranks
