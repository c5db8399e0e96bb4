"""DINO on DINOv2 ViT-B/14 (4-level SimpleFeaturePyramid), COCO, 12 epochs (90k iterations at batch 16).

AdamW lr 1e-4, weight decay 1e-4 (none on norms, biases, tokens), ViT layer-wise lr decay 0.7 (ViTDet-B),
gradient clipping 0.1, 1000-iteration linear warm-up, lr x0.1 for the last epoch, eval every 5000.
"""
from lazydet.config import LazyCall as L
from lazydet.config import get_config
from lazydet.solver import ViTLayerDecay

from ..models.dino_dinov2 import model

dataloader = get_config("common/data/coco_detr.py").dataloader
optimizer = get_config("common/optim.py").AdamW
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_12ep
train = get_config("common/train.py").train

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params.lr_factor_func = L(ViTLayerDecay)(lr_decay_rate=0.7, num_layers=12)

lr_multiplier.warmup_iters = 1000
train.max_iter = 90000
train.eval_period = 5000
train.checkpointer.period = 5000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.1
train.amp.enabled = True
# the doctor compares the effective batch and lr with these (linear-scaling suggestion when they differ)
train.doctor.preflight.reference_total_batch_size = 16
train.doctor.preflight.reference_lr = 1e-4
train.wandb.enabled = True
train.wandb.project = "lazydet"
train.output_dir = "./output/dino_dinov2_b_12ep"
