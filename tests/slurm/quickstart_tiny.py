"""The quickstart recipe (real DINO + DINOv2-shaped ViT + COCO evaluator), cut down for the 2-rank CPU
SLURM test: 6 iterations on 16 training images, a 16-image validation set (generated in a second instead
of the 1500 + 200 images of the full quickstart)."""
from lazydet.data import DatasetCatalog
from lazydet.data.synthetic import register_synthetic_shapes

from ...projects.dino_dinov2.configs.synthetic.dino_dinov2_quickstart import (dataloader, lr_multiplier, model,
                                                                               optimizer, train)

TRAIN_NAME, VAL_NAME = "synthetic_shapes_train16", "synthetic_shapes_val16"
for name, seed in ((TRAIN_NAME, 0), (VAL_NAME, 1)):
    if name not in DatasetCatalog:
        register_synthetic_shapes(name, num_images=16, image_size=140, seed=seed)

dataloader.train.dataset.names = TRAIN_NAME
dataloader.test.dataset.names = VAL_NAME
dataloader.test.batch_size = 4
dataloader.test.num_workers = 0
train.max_iter = 6
train.eval_period = 0  # evaluate once, after the last iteration
train.log_period = 2
train.checkpointer.period = 3
train.doctor.enabled = False
train.output_dir = "./output/quickstart_tiny_slurm"
