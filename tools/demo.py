"""Run a trained detector on image files and save copies with the detected boxes drawn.

    python -m tools.demo --config-file F --weights W.pth --input a.jpg b.png ... --output DIR
        [--score-threshold 0.3] [--device cpu] [key=value ...]

Images go through the recipe's test mapper (its resize), boxes come back in the original image's pixels and
are drawn on the original image; each input `x.jpg` is written as `DIR/x.jpg` (same format; `.png` stays
PNG, anything else becomes PNG) plus `DIR/x.json` with the kept boxes. Class names come from the test
dataset's metadata when it is registered. The ViT's own pretrained weights are not fetched: `--weights`
holds the whole model.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Sequence

import torch
from torchvision.io import write_jpeg, write_png
from torchvision.utils import draw_bounding_boxes

from lazydet.checkpoint import Checkpointer
from lazydet.config import ConfigError, LazyConfig, instantiate
from lazydet.data import DataError, DetectionCollator, MetadataCatalog, read_image

logger = logging.getLogger("lazydet.demo")


def class_names(cfg, num_classes: int) -> List[str]:
    """thing_classes of the recipe's test dataset, else "class <i>"."""
    try:
        names = cfg.dataloader.test.dataset.names
        name = names if isinstance(names, str) else names[0]
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes and len(classes) == num_classes:
            return list(classes)
    except Exception:  # noqa: BLE001 - names are a convenience; fall back to indices
        pass
    return [f"class {i}" for i in range(num_classes)]


def build_test_mapper(cfg):
    try:
        return instantiate(cfg.dataloader.test.mapper)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"dataloader.test.mapper: cannot build the test mapper ({e}); the demo resizes "
                          f"images with it") from e


def _record(path: str, index: int) -> dict:
    image = read_image(path)
    h, w = image.shape[-2:]
    no_boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                "iscrowd": torch.zeros(0, dtype=torch.bool)}
    return {"file_name": path, "image_id": index, "height": h, "width": w, **no_boxes}, image


def predict(model, mapper, paths: Sequence[str], device: torch.device):
    """Yield (path, original uint8 image, detections on the original image's pixels)."""
    collate = DetectionCollator()
    for i, path in enumerate(paths):
        record, image = _record(path, i)
        batch = collate([mapper(record)])
        batch = {"images": batch["images"].to(device), "pixel_mask": batch["pixel_mask"].to(device),
                 "targets": [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()}
                             for t in batch["targets"]]}
        with torch.no_grad():
            (out,) = model(batch)
        yield path, image, {k: v.cpu() for k, v in out.items()}


def draw(image: torch.Tensor, det: dict, names: Sequence[str], threshold: float):
    keep = det["scores"] >= threshold
    boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
    text = [f"{names[int(c)]} {s:.2f}" for c, s in zip(labels, scores)]
    h, w = image.shape[-2:]
    width = max(1, round(max(h, w) / 300))
    drawn = draw_bounding_boxes(image, boxes, labels=text, width=width, colors="red") if len(boxes) else image
    kept = [{"box_xyxy": [round(float(x), 2) for x in b], "score": round(float(s), 4), "label": names[int(c)]}
            for b, s, c in zip(boxes, scores, labels)]
    return drawn, kept


def save(image: torch.Tensor, path: str) -> str:
    if path.lower().endswith((".jpg", ".jpeg")):
        write_jpeg(image, path, quality=95)
    else:
        path = os.path.splitext(path)[0] + ".png"
        write_png(image, path)
    return path


def main(argv=None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--weights", required=True, help="model checkpoint (.pth from train_net, or a state dict)")
    parser.add_argument("--input", nargs="+", required=True, metavar="IMG", help="image files")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the drawn images")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
        if not os.path.isfile(args.weights):
            raise ConfigError(f"--weights {args.weights}: no such file")
        missing = [p for p in args.input if not os.path.isfile(p)]
        if missing:
            raise ConfigError(f"--input: no such file(s): {', '.join(missing)}")
        if "net" in cfg.model.get("backbone", {}) and "pretrained" in cfg.model.backbone.net:
            cfg.model.backbone.net.pretrained = False  # the checkpoint has the backbone too
            cfg.model.backbone.net.checkpoint_path = None
        mapper = build_test_mapper(cfg)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    device = torch.device(args.device)
    model = instantiate(cfg.model).to(device).eval()
    report = Checkpointer(model).load_model_weights(args.weights)
    if report.missing:
        logger.warning(f"{len(report.missing)} model parameters were not in {args.weights}: random weights")
    names = class_names(cfg, model.num_classes)
    os.makedirs(args.output, exist_ok=True)
    written = []
    try:
        for path, image, det in predict(model, mapper, args.input, device):
            drawn, kept = draw(image, det, names, args.score_threshold)
            out = save(drawn, os.path.join(args.output, os.path.basename(path)))
            with open(os.path.splitext(out)[0] + ".json", "w") as f:
                json.dump({"input": path, "detections": kept}, f, indent=1)
            logger.info(f"{path}: {len(kept)} boxes with score >= {args.score_threshold} -> {out}")
            written.append(out)
    except DataError as e:
        sys.exit(f"error: {e}")
    return written


if __name__ == "__main__":
    main()
