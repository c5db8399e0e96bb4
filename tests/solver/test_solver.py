"""Parameter groups, layer-wise lr decay, warm-up schedules, LRMultiplier resume, the COCO schedules."""
import math

import pytest
import torch
from fvcore.common.param_scheduler import ConstantParamScheduler, CosineParamScheduler
from torch import nn

from lazydet.config import get_config, instantiate
from lazydet.solver import (LRMultiplier, ViTLayerDecay, WarmupParamScheduler, get_default_optimizer_params,
                            get_vit_lr_decay_rate, param_group_table)


class TinyViT(nn.Module):
    def __init__(self, depth=2, dim=4):
        super().__init__()
        self.patch_embed = nn.Linear(3, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, 2, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, dim))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.net = TinyViT()
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _hp_by_name(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_no_weight_decay_on_norms_biases_tokens_and_frozen_left_out():
    model = Detector()
    hp = _hp_by_name(model, get_default_optimizer_params(model, base_lr=1.0, weight_decay=0.05))
    assert "frozen.weight" not in hp and "frozen.bias" not in hp
    for name, (lr, wd) in hp.items():
        expect_zero = (name.endswith("bias") or ".norm" in name or ".blocks.0.0." in name or ".blocks.1.0." in name
                       or any(t in name for t in ("cls_token", "register_tokens", "pos_embed")))
        assert wd == (0.0 if expect_zero else 0.05), name
        assert lr == 1.0
    assert hp["backbone.net.patch_embed.weight"][1] == 0.05


def test_vit_layer_decay_matches_formula():
    rate, depth = 0.5, 2
    assert get_vit_lr_decay_rate("backbone.net.cls_token", rate, depth) == rate ** 3
    assert get_vit_lr_decay_rate("backbone.net.patch_embed.weight", rate, depth) == rate ** 3
    assert get_vit_lr_decay_rate("backbone.net.blocks.0.1.weight", rate, depth) == rate ** 2
    assert get_vit_lr_decay_rate("backbone.net.blocks.1.1.weight", rate, depth) == rate ** 1
    assert get_vit_lr_decay_rate("backbone.net.norm.weight", rate, depth) == 1.0
    assert get_vit_lr_decay_rate("head.weight", rate, depth) == 1.0
    model = Detector()
    groups = get_default_optimizer_params(model, base_lr=2.0, weight_decay=0.1, lr_factor_func=ViTLayerDecay(rate, depth))
    hp = _hp_by_name(model, groups)
    assert hp["backbone.net.blocks.0.1.weight"] == (2.0 * rate ** 2, 0.1)
    assert hp["backbone.net.pos_embed"] == (2.0 * rate ** 3, 0.0)
    assert hp["head.weight"] == (2.0, 0.1)
    # one group per distinct (lr, weight_decay), each named after why it exists
    keys = [(g["lr"], g["weight_decay"]) for g in groups]
    assert len(keys) == len(set(keys))
    assert any(g["group_name"] == f"lr x{rate ** 2:.4g} decay" for g in groups)


def test_overrides_win():
    model = Detector()
    hp = _hp_by_name(model, get_default_optimizer_params(model, base_lr=1.0, weight_decay=0.1,
                                                         overrides={r"^head\.": {"lr": 0.3}}))
    assert hp["head.weight"] == (0.3, 0.1) and hp["head.bias"] == (0.3, 0.0)


def test_param_group_table_reports_what_groups_get():
    model = Detector()
    opt = torch.optim.AdamW(get_default_optimizer_params(model, base_lr=1e-3, weight_decay=0.1), lr=1e-3)
    rows = {r["group"]: r for r in param_group_table(model, opt)}
    n_total = sum(p.numel() for p in model.parameters())
    assert sum(r["params"] for r in rows.values()) == n_total
    assert rows["frozen"]["params"] == 20 and rows["frozen"]["trainable"] == "no"
    assert rows["decay"]["weight_decay"] == 0.1 and rows["no_decay"]["weight_decay"] == 0.0
    decayed = 3 * 4 + 2 * 4 * 4 + 4 * 2  # patch_embed, block linears, head weights
    assert rows["decay"]["params"] == decayed


def test_optim_recipe_instantiates_with_base_lr_interpolation():
    cfg = get_config("common/optim.py").AdamW
    cfg.lr = 3e-4
    cfg.params.model = Detector()
    opt = instantiate(cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["lr"] for g in opt.param_groups} == {3e-4}
    assert {g["weight_decay"] for g in opt.param_groups} == {1e-4, 0.0}


def test_warmup_scheduler_values():
    sched = WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), warmup_factor=0.1, warmup_length=0.2)
    end = 0.5 * (1 + math.cos(math.pi * 0.2))
    assert sched(0.0) == pytest.approx(0.1 * end)
    assert sched(0.1) == pytest.approx(0.1 * end + 0.5 * (end - 0.1 * end))
    for w in (0.3, 0.6, 0.9):
        assert sched(w) == pytest.approx(0.5 * (1 + math.cos(math.pi * w)))


def test_lr_multiplier_steps_and_resumes():
    def make():
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([{"params": [p], "lr": 0.5}], lr=0.5)
        return opt, LRMultiplier(opt, CosineParamScheduler(1.0, 0.0), max_iter=10)

    opt, sched = make()
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5 * 0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(10)])
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    with pytest.raises(ValueError, match="fvcore ParamScheduler"):
        LRMultiplier(opt, lambda w: 1.0, 10)


@pytest.mark.parametrize("name,epochs,decay", [("12ep", 12, 11), ("24ep", 24, 20), ("36ep", 36, 30),
                                               ("50ep", 50, 40)])
def test_coco_schedules(name, epochs, decay):
    sched = instantiate(get_config("common/coco_schedule.py")[f"lr_multiplier_{name}"])
    max_iter = epochs * 7500
    step = decay * 7500
    assert sched((step - 1) / max_iter) == 1.0
    assert sched(step / max_iter) == pytest.approx(0.1)
    assert sched((max_iter - 1) / max_iter) == pytest.approx(0.1)


def test_coco_scheduler_warmup():
    from configs.common.coco_schedule import default_coco_scheduler

    sched = instantiate(default_coco_scheduler(epochs=12, decay_epochs=11, warmup_iters=1000, warmup_factor=0.01))
    max_iter = 12 * 7500
    assert sched(0.0) == pytest.approx(0.01)
    assert sched(500 / max_iter) == pytest.approx(0.01 + 0.5 * 0.99)
    assert sched(2000 / max_iter) == 1.0


def test_constant_multiplier_is_identity():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    scheduler = LRMultiplier(opt, ConstantParamScheduler(1.0), 5)
    assert opt.param_groups[0]["lr"] == 0.2
    for _ in range(5):  # through the step after the last iteration (progress 1.0, where fvcore's scheduler raises)
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == 0.2


@pytest.mark.parametrize("run_length", [1500, 3000])
def test_lr_multiplier_warmup_iters_is_where_the_lr_stops_rising(run_length):
    """`warmup_iters` (what the doctor waits for) against the lrs the scheduler really sets, step by step."""
    from lazydet.solver import multistep_multiplier

    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = LRMultiplier(opt, multistep_multiplier(max_iter=3000, steps=[2700], warmup_iters=100), run_length)
    lrs = []
    for _ in range(run_length // 10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    first_full = next(i for i, lr in enumerate(lrs) if lr == pytest.approx(1.0))
    assert sched.warmup_iters == first_full == 100 * run_length // 3000
    assert LRMultiplier(opt, ConstantParamScheduler(1.0), 10).warmup_iters == 0
