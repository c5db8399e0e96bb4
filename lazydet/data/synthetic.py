"""Synthetic "shapes" detection dataset: seeded generator of JPEG files + a COCO json.

The data is written to disk once (``<root>/synthetic_shapes/<hash of the parameters>/``) and then read
through the very same COCO loader, mapper and evaluator as real data, so the quickstart exercises the
whole pipeline. Generation is atomic (build in a temporary folder, then ``os.rename``), so several DDP
ranks may race to create it safely.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SHAPES = ("circle", "square", "triangle", "cross", "star")
DEFAULT_CLASSES = ("circle", "square", "triangle", "cross")


def datasets_root() -> str:
    """Where built-in datasets live and synthetic ones are generated: ``$LAZYDET_DATASETS``, else ``./datasets``."""
    return os.environ.get("LAZYDET_DATASETS", "./datasets")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius ``r`` rotated by ``angle`` (radians)."""
    if kind == "square":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif kind == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif kind == "star":
        pts = [((r if k % 2 == 0 else 0.45 * r) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (r if k % 2 == 0 else 0.45 * r) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    elif kind == "cross":
        a, t = r * 0.72, r * 0.24  # arm half-length and half-thickness
        pts = [(t, -a), (t, -t), (a, -t), (a, t), (t, t), (t, a), (-t, a), (-t, t), (-a, t), (-a, -t), (-t, -t),
               (-t, -a)]
    else:
        raise ValueError(f"unknown shape {kind!r}; choose from {SHAPES}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=255)
    return np.asarray(canvas) > 127


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted gradient + low-frequency blotches + pixel noise, float [H, W, 3] in 0..255."""
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (np.cos(theta) * xx + np.sin(theta) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    blotches = rng.normal(0, 25, (6, 6, 3)).astype(np.float32)
    blotches = np.stack([np.asarray(Image.fromarray(blotches[..., k]).resize((size, size), Image.BICUBIC))
                         for k in range(3)], -1)
    return img + blotches + rng.normal(0, 10, (size, size, 3))


def _object_colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    for _ in range(20):
        rgb = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))) * 255
        if np.abs(rgb - avoid).sum() > 120:
            break
    return rgb


def _render_image(rng: np.random.Generator, size: int, classes, min_objects: int, max_objects: int,
                  min_scale: float, max_scale: float, min_visible: float):
    """One image: returns uint8 [H, W, 3] and a list of (class index, visible mask)."""
    img = _background(rng, size)
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        for _attempt in range(30):
            cls = int(rng.integers(len(classes)))
            r = rng.uniform(min_scale, max_scale) * size / 2
            cx, cy = rng.uniform(r * 0.5, size - r * 0.5, 2)  # may be cut by the border a little
            mask = _shape_mask(classes[cls], size, cx, cy, r, rng.uniform(0, 2 * math.pi))
            if mask.sum() < 16:
                continue
            # new objects go on top: every older one must keep ``min_visible`` of its visible pixels
            if all((m & ~mask).sum() >= min_visible * m.sum() for _, m in objects):
                break
        else:
            continue
        colour = _object_colour(rng, img[mask].mean(0))
        texture = rng.normal(0, 8, (size, size, 1))
        img = np.where(mask[..., None], colour + texture, img)
        objects = [(c, m & ~mask) for c, m in objects] + [(cls, mask)]
    return np.clip(img, 0, 255).astype(np.uint8), objects


def generate_synthetic_shapes(out_dir: str, num_images: int, image_size: int, seed: int,
                              classes=DEFAULT_CLASSES, min_objects: int = 1, max_objects: int = 5,
                              min_scale: float = 0.15, max_scale: float = 0.45, min_visible: float = 0.6,
                              jpeg_quality: int = 92) -> None:
    """Write ``out_dir/images/*.jpg`` and ``out_dir/annotations.json``. Image ``i`` depends only on
    (seed, i), so the output is bitwise reproducible."""
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        pixels, objects = _render_image(rng, image_size, classes, min_objects, max_objects, min_scale,
                                        max_scale, min_visible)
        file_name = f"{i:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(out_dir, "images", file_name), quality=jpeg_quality)
        images.append({"id": i + 1, "file_name": file_name, "height": image_size, "width": image_size})
        for cls, mask in objects:
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(mask.sum()), "iscrowd": 0})
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(classes)]
    with open(os.path.join(out_dir, "annotations.json"), "w") as f:
        json.dump({"info": {"description": "lazydet synthetic shapes"}, "images": images,
                   "annotations": annotations, "categories": categories}, f)


def synthetic_shapes_dir(root: str | None = None, **params) -> str:
    """``<root>/synthetic_shapes/<hash>``: the folder of the dataset generated with ``params``."""
    key = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True, default=list)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return os.path.join(root or datasets_root(), "synthetic_shapes", digest)


def ensure_synthetic_shapes(root: str | None = None, **params) -> str:
    """Generate the dataset unless its folder exists; safe when several processes race."""
    out_dir = synthetic_shapes_dir(root, **params)
    if os.path.isfile(os.path.join(out_dir, "annotations.json")):
        return out_dir
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
    start = time.perf_counter()
    try:
        generate_synthetic_shapes(tmp, **params)
        with open(os.path.join(tmp, "params.json"), "w") as f:
            json.dump({"version": GENERATOR_VERSION, **params}, f, default=list, indent=1)
        try:
            os.rename(tmp, out_dir)  # atomic; fails if another process finished first
        except OSError:
            if not os.path.isfile(os.path.join(out_dir, "annotations.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"generated {params['num_images']} synthetic images in {out_dir} "
                f"({time.perf_counter() - start:.1f} s)")
    return out_dir


def register_synthetic_shapes(name: str, num_images: int = 1500, image_size: int = 140, seed: int = 0,
                              classes=DEFAULT_CLASSES, min_objects: int = 1, max_objects: int = 5,
                              min_scale: float = 0.15, max_scale: float = 0.45, min_visible: float = 0.6,
                              root: str | None = None) -> None:
    """Register a synthetic shapes dataset; files are generated on the first ``DatasetCatalog.get``.

    ``min_scale``/``max_scale``: object circumdiameter as a fraction of ``image_size``;
    ``min_visible``: fraction of an object's pixels that later objects may not cover.
    """
    bad = [c for c in classes if c not in SHAPES]
    if bad:
        raise ValueError(f"register_synthetic_shapes({name!r}): unknown shape(s) {bad}; choose from {SHAPES}")
    params = dict(num_images=int(num_images), image_size=int(image_size), seed=int(seed), classes=list(classes),
                  min_objects=int(min_objects), max_objects=int(max_objects), min_scale=float(min_scale),
                  max_scale=float(max_scale), min_visible=float(min_visible))
    root = root or datasets_root()
    out_dir = synthetic_shapes_dir(root, **params)

    def load():
        ensure_synthetic_shapes(root, **params)
        return load_coco_json(os.path.join(out_dir, "annotations.json"), os.path.join(out_dir, "images"), name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(json_file=os.path.join(out_dir, "annotations.json"),
                                  image_root=os.path.join(out_dir, "images"), evaluator_type="coco",
                                  thing_classes=list(classes), prepare=load)
