"""Every augmentation recipe keeps boxes on the image content: a red box drawn on a black image must
stay red inside the transformed target box and black well outside it."""
import pytest
import torch
from torchvision.ops import box_convert

from lazydet.data import (DetrDatasetMapper, detr_train_augmentation, load_coco_json, lsj_test_resize,
                          lsj_train_augmentation, resize_flip_augmentation, detr_test_augmentation)

from data_test_utils import save_image, write_coco

RECIPES = {
    "detr_multiscale": lambda: detr_train_augmentation(min_sizes=[96, 128, 160], max_size=220, crop_prob=0.0),
    "detr_crop_branch": lambda: detr_train_augmentation(min_sizes=[96, 128, 160], max_size=220,
                                                        crop_resize_sizes=[120, 150], crop_size=[60, 110],
                                                        crop_prob=1.0),
    "lsj": lambda: lsj_train_augmentation(image_size=128, min_scale=0.3, max_scale=2.0),
    "test_resize": lambda: detr_test_augmentation(short_size=100, max_size=180),
    "lsj_test": lambda: lsj_test_resize(image_size=96),
    "resize_flip": lambda: resize_flip_augmentation(min_sizes=[70, 90]),
}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("align")
    js, root = write_coco(tmp, [{"id": 1, "file_name": "a.png", "height": 100, "width": 150}],
                          [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [30, 20, 60, 40], "iscrowd": 0}])
    save_image(root, "a.png", 100, 150, box=(30, 20, 90, 60))
    return load_coco_json(js, root)[0]


def _check_alignment(sample):
    image, target = sample["image"], sample["target"]
    h, w = target["size"].tolist()
    assert tuple(image.shape[-2:]) == (h, w)
    if len(target["labels"]) == 0:
        red = (image[0] > 128) & (image[1] < 100)
        assert red.sum() < 4, "red pixels remain but the box was dropped"
        return False
    assert target["labels"].tolist() == [1]
    x0, y0, x1, y1 = (box_convert(target["boxes"], "cxcywh", "xyxy")[0] * torch.tensor([w, h, w, h])).tolist()
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    inner = image[:, int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2].float()
    if inner.numel():
        assert inner[0].mean() > 200 and inner[1].mean() < 50, "box interior is not the red square"
    outside = torch.ones(h, w, dtype=torch.bool)
    outside[max(int(y0) - 2, 0):int(y1) + 3, max(int(x0) - 2, 0):int(x1) + 3] = False
    assert image[0][outside].float().mean() < 20 if outside.any() else True, "red pixels outside the box"
    return True


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_boxes_follow_image_content(record, name):
    torch.manual_seed(0)
    mapper = DetrDatasetMapper(RECIPES[name](), is_train=True)
    kept = sum(_check_alignment(mapper(record)) for _ in range(12))
    assert kept >= 1
    sample = mapper(record)
    assert sample["image"].dtype == torch.uint8 and sample["target"]["boxes"].dtype == torch.float32
    assert sample["target"]["orig_size"].tolist() == [100, 150]


def test_flip_moves_box(record):
    from torchvision.transforms import v2

    mapper = DetrDatasetMapper(v2.RandomHorizontalFlip(p=1.0), is_train=True)
    s = mapper(record)
    _check_alignment(s)
    cx = s["target"]["boxes"][0, 0].item()
    assert abs(cx - (150 - 60) / 150) < 1e-5  # box centre 60 px -> 90 px of 150


def test_crowd_excluded_and_degenerate_removed(tmp_path):
    js, root = write_coco(tmp_path, [{"id": 1, "file_name": "a.png", "height": 50, "width": 50}],
                          [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 20], "iscrowd": 1},
                           {"id": 2, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "iscrowd": 0},
                           {"id": 3, "image_id": 1, "category_id": 3, "bbox": [40, 40, 0.5, 9], "iscrowd": 0}])
    save_image(root, "a.png", 50, 50)
    s = DetrDatasetMapper(detr_test_augmentation(None), is_train=True)(load_coco_json(js, root)[0])
    assert s["target"]["labels"].tolist() == [1]
    torch.testing.assert_close(s["target"]["boxes"], torch.tensor([[0.4, 0.4, 0.4, 0.4]]))
