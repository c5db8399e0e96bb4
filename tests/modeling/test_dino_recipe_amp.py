"""The model recipe (detrex-sized DINO head) builds and runs; overrides propagate; bf16 autocast is safe."""
import os

import pytest
import torch

from lazydet.config import LazyCall as L
from lazydet.config import LazyConfig, instantiate
from test_dino_model import StandInBackbone, expected_loss_names, tiny_batch, tiny_dino

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "projects", "dino_dinov2", "configs", "models",
                      "dino_dinov2.py")


def recipe_with_stand_in_backbone():
    cfg = LazyConfig.load(RECIPE)
    cfg.model.backbone = L(StandInBackbone)()  # no ViT weights in tests
    return cfg


def test_recipe_builds_the_detrex_sized_head_and_runs():
    torch.manual_seed(0)
    model = instantiate(recipe_with_stand_in_backbone().model)
    # detrex's DINO (projects/dino/configs/models/dino_r50.py): what makes its checkpoints and results comparable
    assert (model.num_queries, model.dn_number, model.num_classes, model.embed_dim) == (900, 100, 80, 256)
    assert len(model.transformer.encoder.layers) == len(model.transformer.decoder.layers) == 6
    assert model.transformer.decoder.look_forward_twice and model.criterion.num_classes == 80
    batch = tiny_batch()
    batch["images"] = torch.nn.functional.pad(batch["images"], (0, 128, 0, 160))  # >= 900 tokens: all queries
    batch["pixel_mask"] = torch.nn.functional.pad(batch["pixel_mask"], (0, 128, 0, 160))
    losses = model.train()(batch)
    # every decoder layer, the encoder proposals and every layer's denoising queries are scored
    assert set(losses) == expected_loss_names(len(model.transformer.decoder.layers))
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        results = model.eval()(batch)
    for result, target in zip(results, batch["targets"]):
        k = model.select_box_nums_for_evaluation
        assert result["boxes"].shape == (k, 4) and result["scores"].shape == result["labels"].shape == (k,)
        h, w = target["orig_size"].tolist()
        boxes = result["boxes"]
        assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 1] >= 0).all()
                    and (boxes[:, 3] <= h).all() and (boxes[:, :2] <= boxes[:, 2:]).all())  # xyxy in the image
        assert bool((result["scores"][:-1] >= result["scores"][1:]).all())  # best first
        assert bool(((result["labels"] >= 0) & (result["labels"] < model.num_classes)).all())


def test_recipe_overrides_propagate_and_mismatches_are_named():
    cfg = recipe_with_stand_in_backbone()
    LazyConfig.apply_overrides(cfg, ["model.embed_dim=64", "model.position_embedding.num_pos_feats=32",
                                     "model.num_classes=5", "model.num_queries=50"])
    model = instantiate(cfg.model)
    assert model.transformer.decoder.embed_dim == 64 and model.heads.class_embed[0].out_features == 5
    assert model.criterion.num_classes == 5 and model.tgt_embed.num_embeddings == 50
    cfg.model.position_embedding.num_pos_feats = 128
    with pytest.raises(ValueError, match="num_pos_feats=128"):
        instantiate(cfg.model)


def test_bf16_autocast_training_step_is_finite():
    torch.manual_seed(0)
    model = tiny_dino().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(tiny_batch())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
