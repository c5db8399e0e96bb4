"""The DINO-DINOv2 recipes: they load, their layer-wise lr decay fits the backbone they build, they differ from
their parents only where intended, and their schedules (instantiated, then evaluated per iteration) match the
COCO 12/50-epoch recipe."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lazydet.config import LazyConfig, instantiate

ROOT = Path(__file__).resolve().parents[2] / "projects" / "dino_dinov2" / "configs"
COCO = sorted(p.stem[len("dino_dinov2_"):] for p in (ROOT / "COCO").glob("dino_dinov2_*.py"))  # s_12ep, ...


def _load(name):
    return LazyConfig.load(ROOT / "COCO" / f"dino_dinov2_{name}.py")


def _multipliers(cfg, iters):
    sched = instantiate(cfg.lr_multiplier)
    max_iter = cfg.train.max_iter
    return [sched(i / max_iter) for i in iters]


def _lr_ladder(cfg):
    """The recipe's real model built on the meta device (no memory, no download) and its optimizer:
    returns (model, {parameter name: lr})."""
    cfg.model.backbone.net.pretrained = False
    with torch.device("meta"):
        model = instantiate(cfg.model)
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return model, {n: lr[id(p)] for n, p in model.named_parameters() if id(p) in lr}


@pytest.mark.parametrize("name", COCO)
def test_coco_recipe_trains_every_parameter_on_a_geometric_lr_ladder(name):
    """Layer-wise lr decay must fit the backbone the recipe builds: each ViT block one decay step below the
    next, the last block one step below the rest of the detector (at the base lr), the embeddings one step
    below the first block. A `num_layers` that disagrees with the real depth breaks the ladder."""
    cfg = _load(name)
    base_lr, decay = cfg.optimizer.lr, cfg.optimizer.params.lr_factor_func.lr_decay_rate
    model, lr_of = _lr_ladder(cfg)
    assert set(lr_of) == {n for n, _ in model.named_parameters()}  # nothing frozen, nothing left out
    assert max(lr_of.values()) == pytest.approx(base_lr)
    assert all(lr == pytest.approx(base_lr) for n, lr in lr_of.items() if not n.startswith("backbone.net."))
    depth = len(model.backbone.net.vit.blocks)
    ladder = [lr_of["backbone.net.vit.patch_embed.proj.weight"]]
    for i in range(depth):
        lrs = {lr for n, lr in lr_of.items() if n.startswith(f"backbone.net.vit.blocks.{i}.")}
        assert len(lrs) == 1, (i, lrs)  # one lr per block
        ladder += lrs
    ladder.append(base_lr)
    steps = [b / a for a, b in zip(ladder, ladder[1:])]
    assert steps == pytest.approx([1 / decay] * (depth + 1)), name


def test_coco_recipes_write_to_their_own_folders():
    """Two recipes never share an output folder (a run must not resume or overwrite another's files)."""
    folders = [_load(name).train.output_dir for name in COCO]
    assert len(set(folders)) == len(folders), folders


@pytest.mark.parametrize("name", ["s_12ep", "b_12ep", "l_12ep", "g_12ep"])
def test_12ep_schedule(name):
    cfg = _load(name)
    assert cfg.train.max_iter == 90000 == 12 * 7500
    m = _multipliers(cfg, [0, 500, 1000, 82499, 82500, 89999])
    assert m[0] == pytest.approx(0.001) and m[1] == pytest.approx(0.5, abs=0.001)  # linear warm-up
    assert m[2] == pytest.approx(1.0) and m[3] == pytest.approx(1.0)
    assert m[4] == pytest.approx(0.1) and m[5] == pytest.approx(0.1)  # last epoch x0.1


@pytest.mark.parametrize("name", ["s_50ep", "b_50ep", "l_50ep"])
def test_50ep_schedule(name):
    cfg = _load(name)
    assert cfg.train.max_iter == 375000 == 50 * 7500
    m = _multipliers(cfg, [0, 1000, 299999, 300000, 374999])
    assert m[0] == pytest.approx(0.001)
    assert m[1:] == pytest.approx([1.0, 1.0, 0.1, 0.1])  # drop at epoch 40


def test_sizes_differ_from_base_only_in_backbone_and_decay():
    base = OmegaConf.to_container(_load("b_12ep"))
    for name in ("s_12ep", "l_12ep"):
        other = _load(name)
        other.model.backbone.net.model_name = "vit_base_patch14_dinov2.lvd142m"
        other.model.backbone.net.drop_path_rate = 0.1
        other.optimizer.params.lr_factor_func.lr_decay_rate = 0.7
        other.optimizer.params.lr_factor_func.num_layers = 12
        other.train.output_dir = "./output/dino_dinov2_b_12ep"
        assert OmegaConf.to_container(other) == base, name


def test_layer_decay_groups_on_a_small_model():
    """The recipe's optimizer builds ViT layer-wise lr groups (block i of 12: 0.7**(12-i))."""
    cfg = _load("s_12ep")
    cfg.model.backbone.net.pretrained = False
    net = instantiate(cfg.model.backbone.net)
    wrapper = torch.nn.Module()
    wrapper.backbone = torch.nn.Module()
    wrapper.backbone.net = net
    cfg.optimizer.params.model = wrapper
    opt = instantiate(cfg.optimizer)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = dict(wrapper.named_parameters())
    assert lr_of[id(names["backbone.net.vit.blocks.11.mlp.fc1.weight"])] == pytest.approx(1e-4 * 0.7)
    assert lr_of[id(names["backbone.net.vit.blocks.0.mlp.fc1.weight"])] == pytest.approx(1e-4 * 0.7 ** 12)
    assert lr_of[id(names["backbone.net.vit.patch_embed.proj.weight"])] == pytest.approx(1e-4 * 0.7 ** 13)
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd_of[id(names["backbone.net.vit.pos_embed"])] == 0.0
    assert wd_of[id(names["backbone.net.vit.blocks.0.norm1.weight"])] == 0.0
    assert wd_of[id(names["backbone.net.vit.blocks.0.attn.qkv.bias"])] == 0.0
    assert wd_of[id(names["backbone.net.vit.blocks.0.attn.qkv.weight"])] == 1e-4


def test_backbone_override_by_key():
    cfg = _load("b_12ep")
    LazyConfig.apply_overrides(cfg, ["model.backbone.net.model_name=vit_large_patch14_reg4_dinov2.lvd142m",
                                     "model.backbone.net.pretrained=False"])
    assert cfg.model.backbone.net.model_name == "vit_large_patch14_reg4_dinov2.lvd142m"
