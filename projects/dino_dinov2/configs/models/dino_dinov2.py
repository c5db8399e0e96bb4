"""DINO on a DINOv2 ViT + SimpleFeaturePyramid (the backbone part lives in dinov2_backbone.py).

Defaults follow detrex's dino_r50_4scale / dino_vitdet: 256-d, 6+6 layers, 8 heads, FFN 2048, 4 levels x 4
points, 900 queries, 100 denoising queries, focal/L1/GIoU = 1/5/2, matcher costs 2/5/2. Nested sizes
(embed_dim, num_classes) are interpolated from the top-level keys; a smaller model also sets
``model.position_embedding.num_pos_feats = model.embed_dim // 2`` (DINO checks it). Deformable attention
core: ``model.transformer.encoder.impl`` / ``decoder.impl``, "auto" (Triton kernel on CUDA, PyTorch path
elsewhere), "pytorch" or "triton" (docs/models.md).
"""
from lazydet.config import LazyCall as L
from lazydet.modeling.dino import (
    DINO,
    DINOCriterion,
    DINOTransformer,
    DINOTransformerDecoder,
    DINOTransformerEncoder,
    HungarianMatcher,
)
from lazydet.modeling.layers import PositionEmbeddingSine

from .dinov2_backbone import backbone

model = L(DINO)(
    backbone=backbone,
    position_embedding=L(PositionEmbeddingSine)(
        num_pos_feats=128, temperature=10000, normalize=True, offset=-0.5),
    transformer=L(DINOTransformer)(
        encoder=L(DINOTransformerEncoder)(
            embed_dim="${...embed_dim}", num_heads=8, feedforward_dim=2048, dropout=0.0, num_layers=6,
            num_feature_levels="${..num_feature_levels}", num_points=4, impl="auto"),
        decoder=L(DINOTransformerDecoder)(
            embed_dim="${...embed_dim}", num_heads=8, feedforward_dim=2048, dropout=0.0, num_layers=6,
            num_feature_levels="${..num_feature_levels}", num_points=4, look_forward_twice=True, impl="auto"),
        num_feature_levels=4,
    ),
    criterion=L(DINOCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0),
        weight_dict={"loss_class": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        alpha=0.25,
        gamma=2.0,
    ),
    embed_dim=256,
    num_classes=80,
    num_queries=900,
    aux_loss=True,
    dn_number=100,
    label_noise_ratio=0.5,
    box_noise_scale=1.0,
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    select_box_nums_for_evaluation=300,
)
