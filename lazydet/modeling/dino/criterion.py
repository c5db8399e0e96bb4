"""DINO's training losses: sigmoid focal (class), L1 and GIoU (boxes) on every prediction set.

Prediction sets: the last decoder layer (``loss_class``...), each auxiliary decoder layer i
(``loss_class_i``), the encoder's top-k proposals (``_enc``) and the denoising queries of every layer
(``_dn``, ``_dn_i``). Matching sets go through the Hungarian matcher; denoising queries have a fixed
assignment (positive copy -> its box, negative copies and padding -> background, no box loss).
Every term is summed over the set and divided by the number of ground-truth boxes in the batch,
averaged across ranks (times the number of denoising groups for ``_dn``). Losses run in fp32 with
autocast disabled.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ..layers import box_cxcywh_to_xyxy
from .denoising import DenoisingMeta

DEFAULT_WEIGHTS = {"loss_class": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}

Match = Tuple[torch.Tensor, torch.Tensor]


def average_num_boxes(targets: List[dict], device) -> float:
    """Boxes per rank, averaged over ranks so every rank normalises by the same number (at least 1)."""
    num_boxes = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num_boxes)
        world_size = dist.get_world_size()
    return max(num_boxes.item() / world_size, 1.0)


def focal_loss(logits: torch.Tensor, onehot: torch.Tensor, num_boxes: float, alpha: float, gamma: float):
    """Sum of torchvision's sigmoid focal loss over queries and classes, / num_boxes."""
    return sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="sum") / num_boxes


def l1_loss(boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float):
    return (boxes - target_boxes).abs().sum() / num_boxes


def giou_loss(boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float):
    """Sum of 1 - GIoU over matched pairs (element-wise, no pairwise matrix), / num_boxes."""
    loss = generalized_box_iou_loss(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes), reduction="sum")
    return loss / num_boxes


class DINOCriterion(nn.Module):
    def __init__(self, num_classes: int, matcher: nn.Module, weight_dict: Optional[Dict[str, float]] = None,
                 alpha: float = 0.25, gamma: float = 2.0):
        """``weight_dict`` holds the base weights (``loss_class``, ``loss_bbox``, ``loss_giou``); a suffixed key
        (e.g. ``loss_class_dn``) overrides the base weight for that set."""
        super().__init__()
        self.num_classes, self.matcher, self.alpha, self.gamma = num_classes, matcher, alpha, gamma
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        missing = set(DEFAULT_WEIGHTS) - set(self.weight_dict)
        if missing:
            raise ValueError(f"DINOCriterion.weight_dict lacks {sorted(missing)}")

    def set_losses(self, logits: torch.Tensor, boxes: torch.Tensor, targets: List[dict],
                   matches: Sequence[Match], num_boxes: float) -> Dict[str, torch.Tensor]:
        """Unweighted losses of one prediction set: logits [B, Q, K], boxes [B, Q, 4]."""
        logits, boxes = logits.float(), boxes.float()
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)]).to(logits.device)
        query_idx = torch.cat([q for q, _ in matches]).to(logits.device)
        labels = torch.cat([t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, matches)])
        target_boxes = torch.cat([t["boxes"][tgt.to(t["boxes"].device)] for t, (_, tgt) in zip(targets, matches)])
        onehot = torch.zeros_like(logits)
        onehot[batch_idx, query_idx, labels.to(logits.device)] = 1.0
        matched = boxes[batch_idx, query_idx]
        target_boxes = target_boxes.to(matched)
        return {
            "loss_class": focal_loss(logits, onehot, num_boxes, self.alpha, self.gamma),
            "loss_bbox": l1_loss(matched, target_boxes, num_boxes),
            "loss_giou": giou_loss(matched, target_boxes, num_boxes),
        }

    def weighted(self, losses: Dict[str, torch.Tensor], suffix: str) -> Dict[str, torch.Tensor]:
        return {name + suffix: value * self.weight_dict.get(name + suffix, self.weight_dict[name])
                for name, value in losses.items()}

    def forward(self, outputs: dict, targets: List[dict]) -> Dict[str, torch.Tensor]:
        """
        ``outputs``: ``pred_logits``/``pred_boxes`` (last layer), ``aux_outputs`` (list of dicts, earlier layers),
        ``enc_outputs`` (dict), and when denoising ``dn_outputs`` (list of dicts, one per layer, last layer
        last) with ``dn_meta`` (DenoisingMeta). Returns weighted scalar losses.
        """
        device = outputs["pred_logits"].device
        num_boxes = average_num_boxes(targets, device)
        with torch.autocast(device_type=device.type, enabled=False):
            sets = [("", outputs)]
            sets += [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
            if "enc_outputs" in outputs:
                sets.append(("_enc", outputs["enc_outputs"]))
            losses = {}
            for suffix, out in sets:
                matches = self.matcher(out["pred_logits"], out["pred_boxes"], targets)
                losses.update(self.weighted(self.set_losses(out["pred_logits"], out["pred_boxes"], targets,
                                                            matches, num_boxes), suffix))
            if "dn_outputs" in outputs:
                losses.update(self.denoising_losses(outputs["dn_outputs"], outputs["dn_meta"], targets, num_boxes))
        return losses

    def denoising_losses(self, dn_outputs: List[dict], meta: Optional[DenoisingMeta], targets: List[dict],
                         num_boxes: float) -> Dict[str, torch.Tensor]:
        losses = {}
        num_layers = len(dn_outputs)
        for layer, out in enumerate(dn_outputs):
            suffix = "_dn" if layer == num_layers - 1 else f"_dn_{layer}"
            if meta is None:  # nothing to denoise in this batch: keep the keys (and the graph) stable
                zero = out["pred_logits"].sum() * 0.0
                losses.update({name + suffix: zero for name in DEFAULT_WEIGHTS})
                continue
            matches = [meta.positive_indices(len(t["labels"])) for t in targets]
            losses.update(self.weighted(self.set_losses(out["pred_logits"], out["pred_boxes"], targets, matches,
                                                        num_boxes * meta.num_groups), suffix))
        return losses
