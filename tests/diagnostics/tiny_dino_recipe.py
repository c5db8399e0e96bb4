"""Stand-in for the quickstart recipe while it is not there: DINO on a tiny random-init DINOv2-style ViT,
synthetic shapes, CPU. The doctor's planted-fault tests change this with overrides."""
from fvcore.common.param_scheduler import MultiStepParamScheduler

from lazydet.config import LazyCall as L
from lazydet.config import get_config
from lazydet.solver import WarmupParamScheduler

model = get_config("../projects/dino_dinov2/configs/models/dino_dinov2.py").model
dataloader = get_config("common/data/synthetic_shapes.py").dataloader
optimizer = get_config("common/optim.py").AdamW
train = get_config("common/train.py").train

vit = model.backbone.net
vit.model_name = "vit_small_patch14_dinov2"
vit.pretrained = False
vit.drop_path_rate = 0.0
vit.embed_dim, vit.depth, vit.num_heads, vit.img_size = 48, 2, 3, 154
model.backbone.out_channels = 32
model.embed_dim = 32
model.position_embedding.num_pos_feats = 16
for part in (model.transformer.encoder, model.transformer.decoder):
    part.num_layers, part.feedforward_dim, part.num_heads = 2, 64, 4
model.num_classes = 4
model.num_queries = 30
model.dn_number = 10
model.select_box_nums_for_evaluation = 30

dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

optimizer.lr = 2e-4
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[900], num_updates=1000),
    warmup_factor=0.1, warmup_length=0.02)

train.output_dir = "./output/doctor_tiny"
train.max_iter = 40
train.eval_period = 0
train.log_period = 5
train.checkpointer.period = 0
train.device = "cpu"
train.seed = 3
train.clip_grad.enabled = True
