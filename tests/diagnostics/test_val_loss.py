"""The validation loss asks the model which loss terms are training-only (DINO: its denoising terms)."""
import copy

import pytest
import torch
from torch import nn

from lazydet.diagnostics.val_loss import ValLossHook, comparable_losses
from tests.modeling.test_dino_model import tiny_batch, tiny_dino


def test_dino_training_only_terms_are_exactly_those_denoising_adds():
    torch.manual_seed(0)
    model = tiny_dino().train()
    with_dn = set(model(tiny_batch()))
    model.dn_number = 0  # no denoising queries: only the terms a validation batch can also have
    without = set(model(tiny_batch()))
    assert without < with_dn
    assert {name for name in with_dn if model.is_training_only_loss(name)} == with_dn - without


def test_val_loss_on_dino_is_the_loss_without_denoising():
    torch.manual_seed(0)
    model = tiny_dino().train()
    hook = ValLossHook(period=1, num_batches=2, loader=[tiny_batch(seed=1), tiny_batch(seed=2)])
    got = hook.compute(model.eval())
    assert not model.training  # compute() put the mode back
    reference = copy.deepcopy(model).train()
    reference.dn_number = 0  # the same weights, denoising off: an independent route to the same terms
    with torch.no_grad():
        expect = [reference(b) for b in (tiny_batch(seed=1), tiny_batch(seed=2))]
    assert set(got) == set(expect[0])
    for name, value in got.items():
        assert value == pytest.approx((float(expect[0][name]) + float(expect[1][name])) / 2, rel=1e-4, abs=1e-6)


class _NoInterface(nn.Module):
    pass


class _Wrapper(nn.Module):  # what DistributedDataParallel looks like from outside: the model is `.module`
    def __init__(self, module):
        super().__init__()
        self.module = module


def test_comparable_losses_asks_the_model_through_a_wrapper_and_keeps_all_without_interface():
    losses = {"loss_class": 1.0, "loss_class_dn": 2.0, "loss_bbox_dn_0": 3.0, "loss_bbox_0": 4.0}
    model = tiny_dino()
    assert comparable_losses(_Wrapper(model), losses) == {"loss_class": 1.0, "loss_bbox_0": 4.0}
    assert comparable_losses(_NoInterface(), losses) == losses
