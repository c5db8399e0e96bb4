"""DINO-DINOv2 ViT-S/14, COCO, 50 epochs (375k iterations, lr x0.1 from epoch 40)."""
from lazydet.config import get_config

from .dino_dinov2_s_12ep import dataloader, model, optimizer, train

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_50ep
lr_multiplier.warmup_iters = 1000
train.max_iter = 375000
train.output_dir = "./output/dino_dinov2_s_50ep"
