"""Datasets, transforms, mapping, sampling and loaders (see docs/data.md)."""
from .catalog import (DataError, DatasetCatalog, Metadata, MetadataCatalog, dataset_records, ensure_category_metadata,
                      verify_num_classes)
from .coco import load_coco_json, register_coco_instances
from .image_io import read_image
from .synthetic import generate_synthetic_shapes, register_synthetic_shapes
from .transforms import (RandomSizeCrop, detr_train_augmentation, lsj_test_resize, lsj_train_augmentation,
                         resize_flip_augmentation, detr_test_augmentation)
from .mapper import DetrDatasetMapper
from .collate import DetectionCollator
from .samplers import InferenceSampler, TrainingSampler
from .serialize import SerializedList
from .build import (MapDataset, build_detection_test_loader, build_detection_train_loader,
                    get_detection_dataset_dicts)
from .builtin import register_all_builtin, register_coco_layout
from .check import check_datasets, dataset_names, image_problem, scan_images

register_all_builtin()

__all__ = [k for k in globals() if not k.startswith("_")]
