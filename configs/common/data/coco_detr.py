"""COCO data with the DETR/DINO recipe: flip, multi-scale short side 480-800 (long side <= 1333),
p=0.5 resize(400/500/600) -> random crop 384-600 -> multi-scale; test: short side 800, long <= 1333."""
from omegaconf import OmegaConf

from lazydet.config import LazyCall as L
from lazydet.data import (DetrDatasetMapper, build_detection_test_loader, build_detection_train_loader,
                          detr_train_augmentation, get_detection_dataset_dicts, detr_test_augmentation)
from lazydet.evaluation import COCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=True),
    mapper=L(DetrDatasetMapper)(
        augmentation=L(detr_train_augmentation)(
            min_sizes=[480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],
            max_size=1333,
            crop_resize_sizes=[400, 500, 600],
            crop_size=[384, 600],
            crop_prob=0.5,
            flip=True,
        ),
        is_train=True,
    ),
    total_batch_size=16,
    num_workers=4,
    aspect_ratio_grouping=False,
    size_divisibility=0,  # the ViT backbone pads to its patch size itself
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        augmentation=L(detr_test_augmentation)(short_size=800, max_size=1333),
        is_train=False,
    ),
    batch_size=1,
    num_workers=4,
)

# output_dir=None: train_net fills in train.output_dir
dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}", output_dir=None)
