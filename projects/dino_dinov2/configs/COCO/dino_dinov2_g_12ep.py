"""DINO-DINOv2 ViT-g/14 (40 blocks, 1536-d, SwiGLU), COCO, 12 epochs; ViTDet-H-like drop path 0.5 and
lr decay 0.9; gradient checkpointing to fit a 1.1B-parameter backbone at batch 16 over 8+ GPUs."""
from .dino_dinov2_b_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.model_name = "vit_giant_patch14_dinov2.lvd142m"
model.backbone.net.drop_path_rate = 0.5
model.backbone.net.grad_checkpointing = True
optimizer.params.lr_factor_func.lr_decay_rate = 0.9
optimizer.params.lr_factor_func.num_layers = 40
train.output_dir = "./output/dino_dinov2_g_12ep"
