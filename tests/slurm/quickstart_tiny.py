"""The quickstart recipe (real DINO + DINOv2-shaped ViT + COCO evaluator), cut down for the 2-rank CPU
SLURM test: 6 iterations and a 16-image validation set, so the whole job takes about a minute."""
from lazydet.data import DatasetCatalog
from lazydet.data.synthetic import register_synthetic_shapes

from ...projects.dino_dinov2.configs.synthetic.dino_dinov2_quickstart import (dataloader, lr_multiplier, model,
                                                                               optimizer, train)

VAL_NAME = "synthetic_shapes_val16"
if VAL_NAME not in DatasetCatalog:
    register_synthetic_shapes(VAL_NAME, num_images=16, image_size=140, seed=1)

dataloader.test.dataset.names = VAL_NAME
dataloader.test.batch_size = 4
dataloader.test.num_workers = 0
train.max_iter = 6
train.eval_period = 0  # evaluate once, after the last iteration
train.log_period = 2
train.checkpointer.period = 3
train.doctor.enabled = False
train.output_dir = "./output/quickstart_tiny_slurm"
