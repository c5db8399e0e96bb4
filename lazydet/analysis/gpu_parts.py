"""Parts 2-4 of the GPU report, each a `fn(rows, **kwargs)` run by `part_runner` in its own process.

* `precision_table`: the seed's Table 2 (backbone x precision at one batch size) through the precision
  ablation's own per-cell processes (`lazydet.analysis.ablation`), one row per cell as it finishes.
* `fp16_scaler`: N training iterations in fp16 autocast with the engine's GradScaler; per step the total
  loss, whether it is finite, the loss scale, and whether the scaler skipped the optimizer step (it skips
  exactly when it finds inf/NaN gradients, and then halves the scale).
* `inference_and_eval`: images/s of `model.eval()` forward (post-processing included) per precision, and the
  time COCO box-AP evaluation takes on the model's detections of random images, replicated to a
  COCO-val-sized set (5000 images) so the figure is the one a real evaluation pays.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict
from typing import Sequence

import torch

from lazydet.engine import HookBase, Trainer
from lazydet.utils import to_device

from .ablation import Cell, run_cell_subprocess
from .part_runner import PartRows
from .timing import build_parts, load_recipe, precision_supported, time_inference

MAX_DETS_PER_IMAGE = 100  # as COCOEvaluator keeps


def precision_table(rows: PartRows, config_file: str, device: str, backbones: Sequence[str],
                    precisions: Sequence[str], batch_size: int, iters: int, warmup: int, cell_timeout_s: float,
                    threads: int = None) -> None:
    """One ablation cell per (backbone, precision): rows are `ablation.CellResult` dicts."""
    for backbone, precision in itertools.product(backbones, precisions):
        cell = Cell(config_file, backbone, precision, batch_size, iters, warmup, device=device, threads=threads)
        rows.add(asdict(run_cell_subprocess(cell, timeout=cell_timeout_s)))


class _ScalerWatch(HookBase):
    """Adds a row per step: total loss, finite or not, the loss scale after the step, skipped or not."""

    def __init__(self, rows: PartRows):
        self.rows = rows

    def before_step(self):
        """Remember the scale the step starts with."""
        self._scale = self.trainer.grad_scaler.get_scale()

    def after_step(self):
        """A lower scale after the step means the scaler found inf/NaN gradients and skipped it."""
        loss = float(self.trainer.storage.latest()["total_loss"][0])
        scale = self.trainer.grad_scaler.get_scale()
        self.rows.add({"step": self.trainer.iter, "total_loss": loss, "finite": bool(torch.isfinite(
            torch.tensor(loss))), "scale": scale, "skipped": scale < self._scale})


def fp16_scaler(rows: PartRows, config_file: str, device: str, batch_size: int, steps: int) -> None:
    """`steps` fp16 iterations of the recipe (its clipping, its optimizer) on two replayed random batches."""
    cfg = load_recipe(config_file, batch_size=batch_size, device=device)
    parts = build_parts(cfg)
    if parts.device.type == "cpu":
        rows.note("CPU: fp16 autocast is not a CPU training mode; run here only to prove the part end to end")
    else:
        skip = precision_supported("fp16", parts.device)
        if skip:
            rows.note(f"skipped: {skip}")
            return
    batches = iter(parts.data_loader)
    cached = [to_device(next(batches), parts.device) for _ in range(2)]
    clip = cfg.train.clip_grad
    trainer = Trainer(parts.model, itertools.cycle(cached), parts.optimizer, max_iter=steps, device=parts.device,
                      amp_enabled=True, amp_dtype="fp16",
                      clip_grad_max_norm=clip.params.max_norm if clip.enabled else None)
    trainer.register_hooks([_ScalerWatch(rows)])
    trainer.train()


@torch.no_grad()
def detections_on_random_images(parts, num_images: int):
    """The model's top-100 detections on `num_images` random images, and their boxes as ground truth, both in
    COCO json form (category id = label + 1)."""
    model = parts.model.eval()
    gt = {"images": [], "annotations": [], "categories": [{"id": c + 1, "name": str(c)} for c in
                                                           range(parts.cfg.model.num_classes)]}
    dets = []
    for batch in parts.data_loader:
        batch = to_device(batch, parts.device)
        for target, out in zip(batch["targets"], model(batch)):
            h, w = (int(v) for v in target["orig_size"])
            image_id = int(target["image_id"])
            gt["images"].append({"id": image_id, "height": h, "width": w})
            scale = torch.tensor([w, h, w, h], device=target["boxes"].device)
            for box, label in zip((target["boxes"] * scale).tolist(), target["labels"].tolist()):
                cx, cy, bw, bh = box
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                          "category_id": label + 1, "bbox": [cx - bw / 2, cy - bh / 2, bw, bh],
                                          "area": bw * bh, "iscrowd": 0})
            top = out["scores"].float().argsort(descending=True)[:MAX_DETS_PER_IMAGE]
            for box, score, label in zip(out["boxes"][top].float().tolist(), out["scores"][top].float().tolist(),
                                         out["labels"][top].tolist()):
                dets.append({"image_id": image_id, "category_id": label + 1,
                             "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
        if len(gt["images"]) >= num_images:
            break
    model.train()
    return gt, dets


def replicate(gt: dict, dets: list, copies: int):
    """The ground truth and detections repeated `copies` times under new image (and annotation) ids."""
    step = max(im["id"] for im in gt["images"]) + 1
    out_gt = {"categories": gt["categories"], "images": [], "annotations": []}
    out_dets = []
    for k in range(copies):
        out_gt["images"] += [dict(im, id=im["id"] + k * step) for im in gt["images"]]
        out_gt["annotations"] += [dict(a, id=a["id"] + k * len(gt["annotations"]), image_id=a["image_id"] + k * step)
                                  for a in gt["annotations"]]
        out_dets += [dict(d, image_id=d["image_id"] + k * step) for d in dets]
    return out_gt, out_dets


def inference_and_eval(rows: PartRows, config_file: str, device: str, batch_size: int, precisions: Sequence[str],
                       iters: int, warmup: int, eval_images: int, eval_copies: int) -> None:
    """Rows {"kind": "inference", precision, images_per_s} and {"kind": "coco_eval", images, detections, seconds}."""
    from lazydet.evaluation import evaluate_coco_detections

    cfg = load_recipe(config_file, batch_size=batch_size, device=device)
    parts = build_parts(cfg)
    for precision in precisions:
        skip = precision_supported(precision, parts.device)
        row = {"kind": "inference", "precision": precision, "batch_size": batch_size}
        if skip:
            rows.add(dict(row, status="skipped", reason=skip))
            continue
        rows.add(dict(row, status="ok", images_per_s=time_inference(parts, iters, warmup, precision=precision)))
    gt, dets = detections_on_random_images(parts, eval_images)
    for copies in sorted({1, eval_copies}):
        big_gt, big_dets = replicate(gt, dets, copies)
        t0 = time.perf_counter()
        results = evaluate_coco_detections(big_gt, big_dets)
        rows.add({"kind": "coco_eval", "status": "ok", "images": len(big_gt["images"]), "detections": len(big_dets),
                  "seconds": time.perf_counter() - t0, "AP": results["bbox/AP"]})
