"""Quickstart: DINO on a small random-init DINOv2-shaped ViT, trained on generated shapes on a CPU.

Differences from the COCO recipe: a 4-block 192-d ViT/14 (random init, no LayerScale), images 112 px,
transformer width 128 with 2 encoder / 3 decoder layers, 100 queries, 20 denoising queries, 4 classes,
higher lr, CPU, no wandb. Reaches AP50 >= 50 on synthetic_shapes_val in about 15 minutes on 2 CPU cores
(see projects/dino_dinov2/README.md for the measured figures).
"""
from lazydet.config import LazyCall as L
from lazydet.config import get_config
from lazydet.solver import multistep_multiplier

from ..models.dino_dinov2 import model

dataloader = get_config("common/data/synthetic_shapes.py").dataloader
optimizer = get_config("common/optim.py").AdamW
train = get_config("common/train.py").train

# A DINOv2-shaped ViT/14, small enough for a CPU; random init, so no LayerScale (init_values=None).
model.backbone.net.pretrained = False
model.backbone.net.model_name = "vit_small_patch14_dinov2.lvd142m"
model.backbone.net.drop_path_rate = 0.0
model.backbone.net.embed_dim = 192
model.backbone.net.depth = 4
model.backbone.net.num_heads = 3
model.backbone.net.img_size = 112
model.backbone.net.init_values = None
model.backbone.out_channels = 128

model.embed_dim = 128
model.position_embedding.num_pos_feats = 64
model.transformer.encoder.num_layers = 2
model.transformer.decoder.num_layers = 3
model.transformer.encoder.feedforward_dim = 512
model.transformer.decoder.feedforward_dim = 512
model.num_classes = 4
model.num_queries = 100
model.dn_number = 20
model.select_box_nums_for_evaluation = 100

# 140 px shapes, trained and tested at 112 px (short side); batch 8.
dataloader.train.mapper.augmentation.min_sizes = [98, 112, 126]
dataloader.test.mapper.augmentation.short_size = 112
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
dataloader.test.num_workers = 1

optimizer.lr = 2e-4
optimizer.weight_decay = 1e-4
lr_multiplier = L(multistep_multiplier)(max_iter=1500, steps=[1350], gamma=0.1, warmup_iters=50)

train.max_iter = 1500
train.eval_period = 1500
train.log_period = 20
train.checkpointer.period = 1500
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.1
train.device = "cpu"
train.seed = 0
train.wandb.enabled = False
train.output_dir = "./output/dino_dinov2_quickstart"
