"""The experiment helpers behind tools/overfit_batch and tools/lr_find, on known curves and a tiny model."""
import numpy as np
import torch

from lazydet.diagnostics import probes


def test_suggest_lr_on_a_synthetic_range_test():
    lrs = np.logspace(-6, 0, 120)
    x = np.log10(lrs)
    # flat, falls fastest around 1e-3, minimum near 1e-2, explodes after 1e-1
    loss = 10 - 4 * (1 / (1 + np.exp(-(x + 3) * 4))) + np.where(x > -1, 40 * (x + 1) ** 2, 0)
    s = probes.suggest_lr(lrs, loss)
    assert 3e-4 < s["steepest"] < 3e-3
    lo = lrs[np.argmin(loss)]
    assert abs(s["min_div_10"] - lo / 10) < 1e-12
    assert s["explode_div_10"] > s["min_div_10"]
    flat = probes.suggest_lr(lrs, np.full(120, 3.0))
    assert flat["steepest"] is None


def test_still_falling():
    rng = np.random.default_rng(0)
    assert probes.still_falling(list(np.linspace(10, 2, 100) + 0.1 * rng.standard_normal(100)))
    assert not probes.still_falling(list(np.r_[np.linspace(10, 2, 50), 2 + 0.1 * rng.standard_normal(50)]))


def test_relative_drop():
    assert abs(probes.relative_drop([10] * 5 + [5] * 10 + [1] * 5) - 0.9) < 1e-12


def test_lr_range_test_keeps_group_ratios_and_stops_on_explosion():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, b):
            return {"loss": (self.lin(b["x"]) - b["y"]).pow(2).mean()}

    m = M()
    opt = torch.optim.SGD([{"params": [lin.weight], "lr": 1.0}, {"params": [lin.bias], "lr": 0.1}])
    x = torch.randn(64, 3)
    batches = [{"x": x, "y": x @ torch.tensor([[1.0], [2.0], [-1.0]])}]
    lrs, losses = probes.lr_range_test(m, opt, batches, 1e-4, 10.0, 80)
    assert len(lrs) < 80  # SGD on a quadratic explodes above lr ~ 1/L: the test stops early
    assert abs(opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"] - 0.1) < 1e-12
    assert lrs == sorted(lrs)


def test_batch_ap_is_100_for_ground_truth_and_0_for_shifted_boxes():
    from lazydet.diagnostics.preflight import GroundTruthAsPredictions
    from tests.diagnostics.test_checks_data import make_batch

    batch = make_batch(seed=1, n_images=3)
    gt = GroundTruthAsPredictions()
    assert probes.batch_ap(gt, batch)["bbox/AP"] == 100.0

    class Shifted(torch.nn.Module):
        def forward(self, b):
            out = gt(b)
            for o in out:
                o["boxes"] = o["boxes"] + 1000.0
            return out

    assert probes.batch_ap(Shifted(), batch)["bbox/AP"] == 0.0
