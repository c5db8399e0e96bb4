"""Checks on the data the model really sees: target boxes and labels, empty images, input normalisation.

`DataSample` accumulates statistics over the first batches of a run (the batch contract of
docs/ARCHITECTURE.md: boxes cxcywh normalised by `size`, labels contiguous), then turns them into findings.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from .findings import Finding


class DataSample:
    """Statistics over a sample of batches; `findings(num_classes)` judges them."""

    def __init__(self, outside_tol: float = 0.02):
        self.tol = outside_tol
        self.batches = 0
        self.images = 0
        self.empty = 0
        self.boxes = 0
        self.outside = 0         # read as cxcywh, the box leaves [0, 1] by more than tol
        self.degenerate = 0      # w or h <= 0, or a non-finite coordinate
        self.above_one = 0       # a coordinate > 1.5: pixels, not normalised
        self.xyxy_consistent = 0  # w > cx and h > cy and all in [0, 1]: what xyxy corners look like
        self.labels: Counter = Counter()
        self.input_mean: list[float] = []
        self.input_std: list[float] = []
        self.bad_image_ids: list = []

    @torch.no_grad()
    def observe_targets(self, targets) -> None:
        """Counts one batch's `targets` (per image `boxes` [n, 4] cxcywh meant to be normalised, `labels` [n]):
        empty images, boxes outside [0, 1], degenerate or non-finite boxes, boxes in pixels (> 1.5), boxes that
        read like xyxy corners, and the label histogram; keeps up to 20 offending image ids."""
        self.batches += 1
        for t in targets:
            self.images += 1
            boxes = t["boxes"].detach().float().reshape(-1, 4).cpu()
            labels = t["labels"].detach().reshape(-1).cpu()
            if len(boxes) == 0:
                self.empty += 1
                continue
            self.labels.update(labels.tolist())
            self.boxes += len(boxes)
            finite = torch.isfinite(boxes).all(dim=1)
            cx, cy, w, h = boxes.unbind(1)
            degenerate = ~finite | (w <= 0) | (h <= 0)
            outside = ((cx - w / 2 < -self.tol) | (cy - h / 2 < -self.tol) |
                       (cx + w / 2 > 1 + self.tol) | (cy + h / 2 > 1 + self.tol)) & finite
            self.degenerate += int(degenerate.sum())
            self.outside += int(outside.sum())
            self.above_one += int((boxes > 1.5).any(dim=1).sum())
            in_unit = ((boxes >= -self.tol) & (boxes <= 1 + self.tol)).all(dim=1)
            self.xyxy_consistent += int((in_unit & (w > cx) & (h > cy)).sum())
            if bool(degenerate.any() | outside.any()) and len(self.bad_image_ids) < 20:
                self.bad_image_ids.append(t.get("image_id"))

    @torch.no_grad()
    def observe_inputs(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """`images` as the backbone receives them (float, normalised); `mask` True on real pixels."""
        x = images.detach().float()
        if mask is not None and mask.shape == (x.shape[0],) + x.shape[2:]:
            sel = mask.unsqueeze(1).expand_as(x)
            vals = x[sel]
        else:
            vals = x.reshape(-1)
        if vals.numel():
            self.input_mean.append(float(vals.mean()))
            self.input_std.append(float(vals.std()))

    def observe_batch(self, batch: dict, model: nn.Module | None = None, inputs_from_hook: bool = False) -> None:
        """Observes a loader batch: its targets, and (unless `InputStatsRecorder` already sees the backbone's real
        input, `inputs_from_hook`) the images normalised with `model.pixel_mean` / `pixel_std` [3, 1, 1]."""
        self.observe_targets(batch.get("targets", []))
        if not inputs_from_hook and model is not None and "images" in batch:
            mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
            if mean is not None and std is not None:
                imgs = (batch["images"].float() - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)
                self.observe_inputs(imgs, batch.get("pixel_mask"))

    def findings(self, num_classes: int | None = None, iteration=None, *, max_abs_mean: float = 3.0,
                 std_range: tuple[float, float] = (0.1, 5.0), empty_warn: float = 0.5,
                 imbalance_ratio: float = 50.0, min_instances: int = 50) -> list[Finding]:
        """What the observed batches show, as Findings: boxes not normalised / in xyxy / outside the image /
        degenerate, labels outside [0, `num_classes`), too many empty images (> `empty_warn`), a class with
        `imbalance_ratio` x fewer instances than the most common, and inputs whose mean or std is far from a
        normalised image's (`max_abs_mean`, `std_range`). Empty list when all is well."""
        out = []
        where = f"in {self.images} images of the first {self.batches} batches"
        ids = f"; e.g. image ids {self.bad_image_ids[:5]}" if self.bad_image_ids else ""
        if self.boxes:
            frac_out = self.outside / self.boxes
            if self.above_one / self.boxes > 0.5:
                out.append(Finding("boxes_not_normalised", "error",
                                   f"{self.above_one}/{self.boxes} boxes have a coordinate > 1.5 {where}", iteration))
            elif self.xyxy_consistent / self.boxes >= 0.95 and frac_out > 0.1:
                out.append(Finding("boxes_look_xyxy", "error",
                                   f"{100 * self.xyxy_consistent / self.boxes:.0f}% of {self.boxes} boxes have "
                                   f"'w' > 'cx' and 'h' > 'cy' (as x1 > x0, y1 > y0 always do) and "
                                   f"{100 * frac_out:.0f}% reach outside the image when read as cxcywh {where}",
                                   iteration))
            elif self.outside:
                out.append(Finding("boxes_outside_image", "warning",
                                   f"{self.outside}/{self.boxes} boxes leave the image by > {self.tol} {where}{ids}",
                                   iteration))
            if self.degenerate:
                out.append(Finding("boxes_degenerate", "warning",
                                   f"{self.degenerate}/{self.boxes} boxes with w/h <= 0 or non-finite {where}{ids}",
                                   iteration))
        if self.labels and num_classes is not None:
            bad = {k: v for k, v in sorted(self.labels.items()) if k < 0 or k >= num_classes}
            if bad:
                out.append(Finding("labels_out_of_range", "error",
                                   f"class ids {sorted(bad)} (counts {bad}) seen but num_classes={num_classes}, "
                                   f"ids must be 0..{num_classes - 1}; max id {max(self.labels)} {where}",
                                   iteration, {"max_label": max(self.labels)}))
        if self.images and self.empty / self.images > empty_warn:
            sev = "error" if self.empty == self.images else "warning"
            out.append(Finding("empty_targets", sev, f"{self.empty}/{self.images} images have no boxes {where}",
                               iteration))
        if sum(self.labels.values()) >= min_instances and len(self.labels) > 1:
            (top, n_top), (low, n_low) = self.labels.most_common(1)[0], self.labels.most_common()[-1]
            if n_top / n_low > imbalance_ratio:
                out.append(Finding("class_imbalance", "info",
                                   f"class {top}: {n_top} instances vs class {low}: {n_low} ({n_top / n_low:.0f}x) "
                                   f"{where}", iteration))
        if self.input_mean:
            mean = sum(self.input_mean) / len(self.input_mean)
            std = sum(self.input_std) / len(self.input_std)
            if abs(mean) > max_abs_mean or not std_range[0] <= std <= std_range[1]:
                out.append(Finding("inputs_not_normalised", "error",
                                   f"backbone input mean {mean:.3g}, std {std:.3g} over {len(self.input_mean)} "
                                   f"batches (expected about 0 and 1)", iteration, {"mean": mean, "std": std}))
        return out


@torch.no_grad()
def non_finite_samples(batch) -> list:
    """Image ids of the samples whose target boxes or (float) image hold a NaN/inf."""
    out = []
    images = batch.get("images") if isinstance(batch, dict) else None
    for i, t in enumerate(batch.get("targets", []) if isinstance(batch, dict) else []):
        bad = not bool(torch.isfinite(t["boxes"]).all())
        if images is not None and images.is_floating_point():
            bad |= not bool(torch.isfinite(images[i]).all())
        if bad:
            out.append(t.get("image_id"))
    return out


class InputStatsRecorder:
    """A forward pre-hook on the backbone that records what it really receives: `backbone(images, mask)`."""

    def __init__(self, module: nn.Module, sample: DataSample):
        self.sample = sample
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        values = list(args) + list(kwargs.values())
        if values and torch.is_tensor(values[0]) and values[0].is_floating_point():
            mask = values[1] if len(values) > 1 and torch.is_tensor(values[1]) else None
            self.sample.observe_inputs(values[0], mask)

    def remove(self) -> None:
        """Detaches the hook from the backbone (after the sampled iterations: no cost afterwards)."""
        self.handle.remove()
