"""DINO's training losses: sigmoid focal (class), L1 and GIoU (boxes) on every prediction set.

Prediction sets: the last decoder layer (``loss_class``...), each auxiliary decoder layer i
(``loss_class_i``), the encoder's top-k proposals (``_enc``) and the denoising queries of every layer
(``_dn``, ``_dn_i``). Matching sets go through the Hungarian matcher; denoising queries have a fixed
assignment (positive copy -> its box, negative copies and padding -> background, no box loss).
Every term is summed over the set and divided by the number of ground-truth boxes in the batch,
averaged across ranks (times the number of denoising groups for ``_dn``). Losses run in fp32 with
autocast disabled.
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ..layers import box_cxcywh_to_xyxy
from .denoising import DenoisingMeta
from .heads import Predictions

DEFAULT_WEIGHTS = {"loss_class": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}

Match = Tuple[torch.Tensor, torch.Tensor]

_DENOISING_TERM = re.compile(r"_dn(_\d+)?$")  # the suffixes denoising_losses() gives


@dataclass
class DINOOutputs:
    """Everything the criterion scores, B images, K matching and P denoising queries, L layers.

    ``layers``: matching predictions of the decoder layers that get a loss (``[L, B, K, .]``, the last layer
    last; L = 1 without auxiliary losses). ``encoder``: the selected encoder proposals (``[B, K, .]``).
    ``denoising``: denoising predictions of every decoder layer (``[L_dec, B, P, .]``), None without
    denoising. ``dn_meta``: their layout (P = 0 for a batch without boxes: the ``_dn`` losses are zeros).
    """
    layers: Predictions
    encoder: Predictions
    denoising: Optional[Predictions] = None
    dn_meta: Optional[DenoisingMeta] = None


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
    """Sum of |box - target| over matched pairs ``[M, 4]`` and coordinates, / num_boxes."""
    return (boxes - target_boxes).abs().sum() / num_boxes


def giou_loss(boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float):
    """Sum of 1 - GIoU over matched pairs (element-wise, no pairwise matrix), / num_boxes."""
    loss = generalized_box_iou_loss(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes), reduction="sum")
    return loss / num_boxes


class DINOCriterion(nn.Module):
    """DINO's losses: ``forward(outputs: DINOOutputs, targets)`` -> dict of weighted scalar losses.

    ``targets``: per image ``labels [n]`` (int64) and ``boxes [n, 4]`` (cxcywh in [0, 1]).
    """

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

    def set_losses(self, predictions: Predictions, targets: List[dict], matches: Sequence[Match],
                   num_boxes: float) -> Dict[str, torch.Tensor]:
        """Unweighted losses of one prediction set (logits ``[B, Q, K]``, boxes ``[B, Q, 4]``) given the
        ``matches`` (query indices, target indices) of every image."""
        logits, boxes = predictions.logits.float(), predictions.boxes.float()
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
        """``{name: loss}`` -> ``{name + suffix: loss * weight}`` (the suffixed weight if given, else the base)."""
        return {name + suffix: value * self.weight_dict.get(name + suffix, self.weight_dict[name])
                for name, value in losses.items()}

    @staticmethod
    def is_training_only_loss(name: str) -> bool:
        """True for the denoising terms (``loss_class_dn``, ``loss_bbox_dn_3``, ...): their queries are noised
        copies of the ground truth, built only in training, so a loss measured on validation batches (or any
        loss to compare with it) leaves them out."""
        return _DENOISING_TERM.search(name) is not None

    def forward(self, outputs: DINOOutputs, targets: List[dict]) -> Dict[str, torch.Tensor]:
        """Losses of the last layer (no suffix), earlier layers (``_0``...), the encoder proposals (``_enc``)
        and, with denoising, every layer's denoising queries (``_dn`` last, ``_dn_0``...)."""
        device = outputs.layers.logits.device
        num_boxes = average_num_boxes(targets, device)
        with torch.autocast(device_type=device.type, enabled=False):
            num_layers = outputs.layers.logits.shape[0]
            sets = [("" if i == num_layers - 1 else f"_{i}", outputs.layers.layer(i)) for i in range(num_layers)]
            sets.append(("_enc", outputs.encoder))
            losses = {}
            for suffix, predictions in sets:
                matches = self.matcher(predictions.logits, predictions.boxes, targets)
                losses.update(self.weighted(self.set_losses(predictions, targets, matches, num_boxes), suffix))
            if outputs.denoising is not None:
                losses.update(self.denoising_losses(outputs.denoising, outputs.dn_meta, targets, num_boxes))
        return losses

    def denoising_losses(self, denoising: Predictions, meta: DenoisingMeta, targets: List[dict],
                         num_boxes: float) -> Dict[str, torch.Tensor]:
        """Weighted losses of the denoising queries of every layer (``[L, B, P, .]``): the positive copies are
        assigned their box, everything else is background."""
        losses = {}
        num_layers = denoising.logits.shape[0]
        for layer in range(num_layers):
            suffix = "_dn" if layer == num_layers - 1 else f"_dn_{layer}"
            matches = [meta.positive_indices(len(t["labels"])) for t in targets]
            losses.update(self.weighted(self.set_losses(denoising.layer(layer), targets, matches,
                                                        num_boxes * meta.num_groups), suffix))
        return losses
