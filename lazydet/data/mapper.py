"""Record -> (image tensor, DETR-style target): decode, augment with v2, clean up boxes."""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2

from .catalog import DataError
from .image_io import read_image


class DetrDatasetMapper:
    """Callable turning one dataset record into ``{"image": uint8 [3,h,w], "target": {...}}``.

    The target follows docs/ARCHITECTURE.md: contiguous ``labels``, ``boxes`` as cxcywh normalised by
    the transformed (unpadded) ``size``, plus ``image_id``, ``file_name``, ``orig_size``. Crowd boxes are
    left out (the evaluator reads them from the json). After augmentation boxes are clamped to the
    image and boxes narrower than ``min_box_size`` pixels are dropped with their labels.
    """

    def __init__(self, augmentation=None, is_train: bool = True, min_box_size: float = 1.0):
        self.augmentation = augmentation if augmentation is not None else v2.Identity()
        self.is_train = is_train
        self.cleanup = v2.Compose([v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=min_box_size)])

    def __call__(self, record: dict) -> dict:
        image = read_image(record["file_name"])
        h, w = image.shape[-2:]
        if (h, w) != (record["height"], record["width"]):
            raise DataError(f"image {record['file_name']} decodes to (h={h}, w={w}) after EXIF rotation but its "
                            f"json record (image id {record['image_id']}) says (h={record['height']}, "
                            f"w={record['width']})")
        keep = ~torch.as_tensor(record["iscrowd"], dtype=torch.bool)
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(record["boxes"], dtype=torch.float32)[keep],
                                         format="XYXY", canvas_size=(h, w))
        target = {"boxes": boxes, "labels": torch.as_tensor(record["labels"], dtype=torch.int64)[keep]}
        image, target = self.augmentation(tv_tensors.Image(image), target)
        image, target = self.cleanup(image, target)
        new_h, new_w = image.shape[-2:]
        scale = torch.tensor([new_w, new_h, new_w, new_h], dtype=torch.float32)
        boxes = box_convert(target["boxes"].as_subclass(torch.Tensor), "xyxy", "cxcywh") / scale
        return {
            "image": image.as_subclass(torch.Tensor).contiguous(),
            "target": {
                "image_id": int(record["image_id"]),
                "file_name": record["file_name"],
                "labels": target["labels"],
                "boxes": boxes.to(torch.float32).reshape(-1, 4),
                "size": torch.tensor([new_h, new_w], dtype=torch.int64),
                "orig_size": torch.tensor([h, w], dtype=torch.int64),
            },
        }
