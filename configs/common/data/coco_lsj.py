"""COCO data with the ViTDet large-scale-jitter recipe: scale 0.1-2.0 around a fixed square, crop it,
pad to the square (collate ``fixed_size``); test: long side = image_size, padded to the same square."""
from omegaconf import OmegaConf

from lazydet.config import LazyCall as L
from lazydet.data import (DetrDatasetMapper, build_detection_test_loader, build_detection_train_loader,
                          get_detection_dataset_dicts, lsj_test_resize, lsj_train_augmentation)
from lazydet.evaluation import COCOEvaluator

image_size = 1024

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=True),
    mapper=L(DetrDatasetMapper)(
        augmentation=L(lsj_train_augmentation)(image_size=image_size, min_scale=0.1, max_scale=2.0, flip=True),
        is_train=True,
    ),
    total_batch_size=16,
    num_workers=4,
    fixed_size=[image_size, image_size],
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(augmentation=L(lsj_test_resize)(image_size=image_size), is_train=False),
    batch_size=1,
    num_workers=4,
    fixed_size=[image_size, image_size],
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}", output_dir=None)
