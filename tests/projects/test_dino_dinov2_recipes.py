"""The DINO-DINOv2 recipes: they load, differ from their parents only where intended, and their
schedules (instantiated, then evaluated per iteration) match the COCO 12/50-epoch recipe."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lazydet.config import LazyConfig, instantiate

ROOT = Path(__file__).resolve().parents[2] / "projects" / "dino_dinov2" / "configs"
COCO = {
    "s_12ep": ("vit_small_patch14_dinov2.lvd142m", 12),
    "b_12ep": ("vit_base_patch14_dinov2.lvd142m", 12),
    "l_12ep": ("vit_large_patch14_dinov2.lvd142m", 24),
    "g_12ep": ("vit_giant_patch14_dinov2.lvd142m", 40),
    "s_50ep": ("vit_small_patch14_dinov2.lvd142m", 12),
    "b_50ep": ("vit_base_patch14_dinov2.lvd142m", 12),
    "l_50ep": ("vit_large_patch14_dinov2.lvd142m", 24),
}


def _load(name):
    return LazyConfig.load(ROOT / "COCO" / f"dino_dinov2_{name}.py")


def _multipliers(cfg, iters):
    sched = instantiate(cfg.lr_multiplier)
    max_iter = cfg.train.max_iter
    return [sched(i / max_iter) for i in iters]


@pytest.mark.parametrize("name", sorted(COCO))
def test_coco_recipe_values(name):
    cfg = _load(name)
    model_name, depth = COCO[name]
    assert set(cfg.keys()) >= {"model", "dataloader", "optimizer", "lr_multiplier", "train"}
    assert cfg.model.backbone.net.model_name == model_name and cfg.model.backbone.net.pretrained
    assert cfg.optimizer._target_ is torch.optim.AdamW or str(cfg.optimizer._target_).endswith("AdamW")
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.optimizer.params.lr_factor_func.num_layers == depth
    assert cfg.train.clip_grad.enabled and cfg.train.clip_grad.params.max_norm == 0.1
    assert cfg.train.eval_period == 5000
    assert cfg.train.wandb.enabled and cfg.train.wandb.project == "lazydet"
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.dataloader.train.dataset.names == "coco_2017_train"
    assert cfg.train.output_dir.endswith(f"dino_dinov2_{name}")


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
