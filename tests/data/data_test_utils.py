"""Helpers for tests/data: tiny COCO jsons and images written to tmp folders."""
import io
import json
import os

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_convert


def write_coco(tmp_path, images, annotations, categories=None, name="ann.json"):
    """Write a tiny COCO json + return (json_path, image_root)."""
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    categories = categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path), str(root)


def encoded_noise_image(fmt: str, h: int = 40, w: int = 60) -> bytes:
    """The bytes of an h x w noise image (so the pixel data, not the header, is most of the file) encoded as `fmt`."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def save_image(root, file_name, h, w, mode="RGB", fill=(0, 0, 0), box=None, box_colour=(255, 0, 0), exif=None):
    arr = np.zeros((h, w, 3), np.uint8) + np.array(fill, np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        arr[y0:y1, x0:x1] = box_colour
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    kwargs = {"exif": exif} if exif is not None else {}
    img.save(os.path.join(root, file_name), **kwargs)


def ground_truth_outputs(batch) -> list[dict]:
    """Model outputs that predict each image's own targets: boxes xyxy in original pixels, score 1."""
    outs = []
    for t in batch["targets"]:
        h, w = t["orig_size"].tolist()
        boxes = box_convert(t["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
        outs.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": t["labels"]})
    return outs


class GroundTruthModel(torch.nn.Module):
    """A 'model' returning ``ground_truth_outputs``; checks it is called in eval mode without gradients."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives inference_on_dataset a device

    def forward(self, batch):
        assert not self.training and not torch.is_grad_enabled()
        return ground_truth_outputs(batch)


class GroundTruthDetector(GroundTruthModel):
    """A stand-in detector for whole train_net runs: in training a loss of its one parameter (the engine steps,
    checkpoints and evaluates as with a real model), in evaluation ``ground_truth_outputs`` (AP 100 whenever
    the loader and the evaluator's ground truth agree)."""

    def forward(self, batch):
        if self.training:
            return {"loss_stand_in": (self.anchor - 1).pow(2).sum()}
        return super().forward(batch)
