"""Draw a recipe's samples after its own transforms: boxes and class names, one PNG per image.

    python -m tools.visualize_data --config-file configs/common/data/synthetic_shapes.py --num 8 --out vis/
    python -m tools.visualize_data --config-file F --split test --num 4 --out vis/ dataloader.test.dataset.names=coco_mini_val

The first thing to look at when AP stays near 0: boxes must sit on the objects. The boxes drawn are
the targets the model trains on (normalised cxcywh), scaled back to the transformed image.
"""
import argparse
import os
import sys

import torch
from PIL import Image
from torchvision.ops import box_convert
from torchvision.utils import draw_bounding_boxes

from lazydet.config import ConfigError, LazyConfig, instantiate
from lazydet.data import DataError, MetadataCatalog

PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="a recipe with a `dataloader` (train/test)")
    p.add_argument("--split", choices=["train", "test"], default="train")
    p.add_argument("--num", type=int, default=8, help="number of images to draw")
    p.add_argument("--out", default="vis_data", help="output folder for the PNGs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random augmentations")
    p.add_argument("opts", nargs="*", help="config overrides, dotted.key=value")
    return p.parse_args(argv)


def draw_sample(sample: dict, class_names) -> torch.Tensor:
    """uint8 [3, h, w] image with the sample's target boxes and class names drawn on it."""
    image, target = sample["image"], sample["target"]
    h, w = target["size"].tolist()
    boxes = box_convert(target["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=torch.float32)
    labels = target["labels"].tolist()
    names = [class_names[k] if k < len(class_names) else f"?{k}" for k in labels]
    colors = [PALETTE[k % len(PALETTE)] for k in labels]
    if not labels:
        return image
    return draw_bounding_boxes(image, boxes, labels=names, colors=colors, width=2)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        cfg = LazyConfig.load(args.config_file)
        LazyConfig.apply_overrides(cfg, args.opts)
        loader_cfg = cfg.dataloader[args.split]
        records = instantiate(loader_cfg.dataset)
        mapper = instantiate(loader_cfg.mapper)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    names = loader_cfg.dataset.names
    class_names = MetadataCatalog.get(names if isinstance(names, str) else names[0]).get("thing_classes", [])
    os.makedirs(args.out, exist_ok=True)
    for i, record in enumerate(records[: args.num]):
        sample = mapper(record)
        canvas = draw_sample(sample, class_names)
        path = os.path.join(args.out, f"{args.split}_{i:03d}_{record['image_id']}.png")
        Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)
        t = sample["target"]
        print(f"{path}: {len(t['labels'])} boxes, size {tuple(t['size'].tolist())} "
              f"(original {tuple(t['orig_size'].tolist())})")


if __name__ == "__main__":
    main()
