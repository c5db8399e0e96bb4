"""The backbone part of DINO-DINOv2: a timm DINOv2 ViT-B/14 and a ViTDet SimpleFeaturePyramid.

One stride-14 map -> 4 levels (strides 7, 14, 28, 56), 256 channels, LayerNorm. Change the size with
`model.backbone.net.model_name=vit_large_patch14_dinov2.lvd142m` (or a `_reg4_` variant); pretrained
weights come from the timm hub or `model.backbone.net.checkpoint_path=/path/to/file`.
"""
from lazydet.config import LazyCall as L
from lazydet.modeling.backbone import DINOv2ViT, SimpleFeaturePyramid

backbone = L(SimpleFeaturePyramid)(
    net=L(DINOv2ViT)(
        model_name="vit_base_patch14_dinov2.lvd142m",
        pretrained=True,
        checkpoint_path=None,
        drop_path_rate=0.1,
        grad_checkpointing=False,
        freeze_blocks=0,
    ),
    out_channels=256,
    scale_factors=(2.0, 1.0, 0.5),
    top_block=True,
    norm="LN",
)
