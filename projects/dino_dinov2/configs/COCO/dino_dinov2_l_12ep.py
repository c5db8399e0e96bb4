"""DINO-DINOv2 ViT-L/14 (24 blocks, 1024-d), COCO, 12 epochs; ViTDet-L's drop path 0.4 and lr decay 0.8."""
from .dino_dinov2_b_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.model_name = "vit_large_patch14_dinov2.lvd142m"
model.backbone.net.drop_path_rate = 0.4
optimizer.params.lr_factor_func.lr_decay_rate = 0.8
optimizer.params.lr_factor_func.num_layers = 24
train.output_dir = "./output/dino_dinov2_l_12ep"
