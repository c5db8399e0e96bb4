"""DINO-DINOv2 ViT-S/14 (12 blocks, 384-d), COCO, 12 epochs."""
from .dino_dinov2_b_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.model_name = "vit_small_patch14_dinov2.lvd142m"
model.backbone.net.drop_path_rate = 0.1
optimizer.params.lr_factor_func.lr_decay_rate = 0.7
optimizer.params.lr_factor_func.num_layers = 12
train.output_dir = "./output/dino_dinov2_s_12ep"
