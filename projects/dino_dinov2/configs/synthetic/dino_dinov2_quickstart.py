"""Quickstart: DINO on a small random-init DINOv2-shaped ViT, trained on generated shapes on a CPU.

Differences from the COCO recipe, all for speed on 2 CPU cores: a 4-block 192-d ViT/14 (random init, no
LayerScale), 3 pyramid levels (strides 14, 28, 56: no stride-7 level), transformer width 128 with 2 encoder /
3 decoder layers, 50 queries, 20 denoising queries with label noise 1.0, 4 classes, batch 4, lr 4e-4, CPU,
no wandb. The 140-px shapes are upscaled to 224 px: with more patches per object the random-init ViT learns
to tell the shapes apart sooner, per second of CPU, than at 112 or 168 px (measured). Figures and command:
projects/dino_dinov2/README.md.
"""
from lazydet.config import LazyCall as L
from lazydet.config import get_config
from lazydet.solver import multistep_multiplier

from ..models.dino_dinov2 import model

dataloader = get_config("common/data/synthetic_shapes.py").dataloader
optimizer = get_config("common/optim.py").AdamW
train = get_config("common/train.py").train

IMAGE_SIZE = 224  # short side in training (+-14) and test

# A DINOv2-shaped ViT/14 small enough for a CPU; random init, so no LayerScale (init_values=None).
model.backbone.net.pretrained = False
model.backbone.net.model_name = "vit_small_patch14_dinov2.lvd142m"
model.backbone.net.drop_path_rate = 0.0
model.backbone.net.embed_dim = 192
model.backbone.net.depth = 4
model.backbone.net.num_heads = 3
model.backbone.net.img_size = IMAGE_SIZE
model.backbone.net.init_values = None
model.backbone.out_channels = 128
model.backbone.scale_factors = [1.0, 0.5]  # + the max-pooled top level: 3 levels
model.transformer.num_feature_levels = 3

model.embed_dim = 128
model.position_embedding.num_pos_feats = 64
model.transformer.encoder.num_layers = 2
model.transformer.decoder.num_layers = 3
model.transformer.encoder.feedforward_dim = 512
model.transformer.decoder.feedforward_dim = 512
model.num_classes = 4
model.num_queries = 50
model.dn_number = 20
model.label_noise_ratio = 1.0  # half the denoising labels are redrawn: more "classify from the image" signal
model.select_box_nums_for_evaluation = 100

dataloader.train.mapper.augmentation.min_sizes = [IMAGE_SIZE - 14, IMAGE_SIZE, IMAGE_SIZE + 14]
dataloader.test.mapper.augmentation.short_size = IMAGE_SIZE
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.num_workers = 1

optimizer.lr = 4e-4
optimizer.weight_decay = 1e-4
# Relative schedule: warm-up over the first 1/30, lr x0.1 for the last 10% of train.max_iter, whatever it is.
lr_multiplier = L(multistep_multiplier)(max_iter=3000, steps=[2700], gamma=0.1, warmup_iters=100)

train.max_iter = 2200  # 14 min on an idle 2-core CPU: AP50 66 (projects/dino_dinov2/README.md)
train.eval_period = 0  # evaluate once, at the end
train.log_period = 20
train.checkpointer.period = 1000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.1
train.device = "cpu"
train.seed = 0
train.wandb.enabled = False
train.output_dir = "./output/dino_dinov2_quickstart"
