"""Parameter/optimizer checks on real modules and optimizers with planted faults."""
import torch
from torch import nn

from lazydet.diagnostics import checks_params as P


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)
        self.unused = nn.Linear(8, 8)

    def forward(self, x):
        return self.head(self.backbone(x))


def step(model, opt):
    opt.zero_grad()
    model(torch.randn(16, 4)).pow(2).mean().backward()


def test_coverage_finds_head_missing_from_optimizer():
    m = Tiny()
    opt = torch.optim.AdamW(list(m.backbone.parameters()) + list(m.unused.parameters()), lr=1e-3)
    fs = {f.name: f for f in P.check_optimizer_coverage(m, opt)}
    assert set(fs) == {"params_not_in_optimizer"}
    assert fs["params_not_in_optimizer"].data["names"] == ["head.weight", "head.bias"]
    assert "head" in fs["params_not_in_optimizer"].evidence
    assert P.check_optimizer_coverage(m, torch.optim.AdamW(m.parameters())) == []


def test_coverage_finds_duplicates_across_two_optimizers_and_frozen_in_optimizer():
    m = Tiny()
    opt1 = torch.optim.SGD(m.parameters(), lr=0.1)
    opt2 = torch.optim.SGD(m.head.parameters(), lr=0.1)
    fs = {f.name: f for f in P.check_optimizer_coverage(m, [opt1, opt2])}
    assert set(fs["params_in_two_groups"].data["names"]) == {"head.weight", "head.bias"}
    m.head.requires_grad_(False)
    fs = {f.name for f in P.check_optimizer_coverage(m, opt1)}
    assert fs == {"frozen_in_optimizer"}


def test_unexpected_frozen_respects_expected_patterns():
    m = Tiny()
    m.backbone.requires_grad_(False)
    assert P.frozen_modules(m) == ["backbone"]
    assert P.check_unexpected_frozen(m, ["backbone*"]) is None
    m.head.requires_grad_(False)
    f = P.check_unexpected_frozen(m, ["backbone*"])
    assert f.name == "unexpected_frozen" and f.data["modules"] == ["head"]


def test_grad_presence_names_disconnected_params():
    m = Tiny()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    gp = P.GradPresence(m)
    for _ in range(2):
        step(m, opt)
        gp.observe(m)
    f = gp.finding(m)
    assert f.name == "params_without_grad" and f.data["names"] == ["unused.weight", "unused.bias"]
    assert P.GradPresence(m, ignore=["unused.*"]).names == [n for n, _ in m.named_parameters() if "unused" not in n]


def test_fingerprint_finds_params_with_zero_lr():
    m = Tiny()
    opt = torch.optim.SGD([{"params": m.backbone.parameters(), "lr": 0.1},
                           {"params": list(m.head.parameters()) + list(m.unused.parameters()), "lr": 0.0}])
    fp = P.ParamFingerprint(m, opt)
    for _ in range(3):
        step(m, opt)
        opt.step()
    assert set(fp.unchanged(m)) == {"head.weight", "head.bias", "unused.weight", "unused.bias"}


def test_update_ratio_matches_direct_computation_and_flags_high_lr():
    torch.manual_seed(0)
    m = Tiny()
    opt = torch.optim.SGD([{"params": m.backbone.parameters(), "lr": 1e-3},
                           {"params": m.head.parameters(), "lr": 10.0}])
    probe = P.UpdateRatioProbe(samples_per_tensor=10**6)  # larger than every tensor: exact
    step(m, opt)
    before = [torch.cat([p.detach().flatten().clone() for p in g["params"]]) for g in opt.param_groups]
    probe.before_step(opt)
    opt.step()
    ratios = probe.after_step()
    for g, r, b in zip(opt.param_groups, ratios, before):
        after = torch.cat([p.detach().flatten() for p in g["params"]])
        assert abs(r["ratio"] - float((after - b).norm() / b.norm())) < 1e-6
        assert r["lr"] == g["lr"]
    fs = P.check_update_ratios(ratios, P.group_names(m, opt), low=1e-8, high=0.1)
    assert [f.name for f in fs] == ["update_ratio_high"] and "lr 1.00e+01" in fs[0].evidence


def test_grad_health_names_non_finite():
    m = Tiny()
    step(m, torch.optim.SGD(m.parameters(), lr=0.1))
    norm, bad = P.grad_health(m)
    ref = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert bad == [] and abs(norm - float(ref)) < 1e-5
    m.head.weight.grad[0, 0] = float("nan")
    assert P.grad_health(m)[1] == ["head.weight"]
