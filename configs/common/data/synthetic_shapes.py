"""The quickstart's data: generated shapes (4 classes, 1-5 objects, 140x140 images; 1500 train / 200 val,
see docs/data.md). Train: flip + short side in 126..154; test: the images as they are."""
from omegaconf import OmegaConf

from lazydet.config import LazyCall as L
from lazydet.data import (DetrDatasetMapper, build_detection_test_loader, build_detection_train_loader,
                          get_detection_dataset_dicts, resize_flip_augmentation, detr_test_augmentation)
from lazydet.evaluation import COCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_shapes_train", filter_empty=True),
    mapper=L(DetrDatasetMapper)(
        augmentation=L(resize_flip_augmentation)(min_sizes=[126, 140, 154], max_size=None, flip=True),
        is_train=True,
    ),
    total_batch_size=8,
    num_workers=2,
    size_divisibility=0,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_shapes_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(augmentation=L(detr_test_augmentation)(short_size=None), is_train=False),
    batch_size=8,
    num_workers=2,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}", output_dir=None)
