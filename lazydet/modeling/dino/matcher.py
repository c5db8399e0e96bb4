"""Hungarian matching between predictions and ground truth (DETR's set prediction, DINO's focal cost).

cost = cost_class * focal_cost + cost_bbox * L1(cxcywh) + cost_giou * (-GIoU), minimised per image with
scipy's ``linear_sum_assignment``. The focal class cost is the focal loss of predicting the target class
minus that of predicting background for it, as in Deformable DETR / detrex.
"""
from typing import List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ...data.catalog import DataError
from ..layers import box_cxcywh_to_xyxy, generalized_box_iou


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """[Q, K] logits, [N] labels -> [Q, N] cost of assigning query q to a target of class labels[n]."""
    prob = logits.sigmoid()
    positive = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    negative = (1 - alpha) * prob ** gamma * -(1 - prob + 1e-8).log()
    return positive[:, labels] - negative[:, labels]


def check_target_boxes(targets: List[dict]) -> None:
    """Raise a one-line DataError naming the first image (``image_id``, ``file_name`` when the target has
    them) whose ``boxes`` [N, 4] hold NaN or inf; return None when every target box is finite."""
    for t in targets:
        finite = torch.isfinite(t["boxes"]).all(dim=-1)
        if not finite.all():
            bad = (~finite).nonzero()[:, 0].tolist()
            where = f" (file {t['file_name']})" if t.get("file_name") else ""
            example = [round(v, 4) for v in t["boxes"][bad[0]].tolist()]
            raise DataError(f"target boxes of image id {t.get('image_id', '?')}{where} are not finite: {len(bad)} "
                            f"of its {len(finite)} boxes (indices {bad[:5]}), e.g. {example} (cx, cy, w, h); fix "
                            f"the annotations or the dataset/mapper that produced them (the predictions are not at "
                            f"fault)")


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to ground-truth boxes per image, minimising the weighted cost above
    (``cost_class``, ``cost_bbox``, ``cost_giou``; focal ``alpha``/``gamma``). No parameters; no gradient."""

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_bbox and cost_giou cannot all be 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                    target_boxes: torch.Tensor) -> torch.Tensor:
        """[Q, K], [Q, 4] predictions of one image vs [N] labels, [N, 4] cxcywh boxes -> [Q, N]."""
        logits, boxes, target_boxes = logits.float(), boxes.float(), target_boxes.float()
        cost = self.cost_class * focal_class_cost(logits, labels, self.alpha, self.gamma)
        cost = cost + self.cost_bbox * torch.cdist(boxes, target_boxes, p=1)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        return cost - self.cost_giou * giou

    @torch.no_grad()
    def forward(self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor,
                targets: List[dict]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """[B, Q, K] logits and [B, Q, 4] boxes -> per image (query indices, target indices), int64 on CPU,
        sorted by query index. A non-finite cost raises: a DataError naming the image when a target box is
        NaN/inf (checked only then: no cost on the normal path), else FloatingPointError (diverged predictions)."""
        batch, num_queries = pred_logits.shape[:2]
        sizes = [len(t["labels"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]
        # One cost matrix against every target of the batch, one device->host copy, then per image.
        labels = torch.cat([t["labels"] for t in targets]).to(pred_logits.device)
        boxes = torch.cat([t["boxes"] for t in targets]).to(pred_boxes.device)
        cost = self.cost_matrix(pred_logits.flatten(0, 1), pred_boxes.flatten(0, 1), labels, boxes)
        cost = cost.view(batch, num_queries, -1).cpu()
        if not torch.isfinite(cost).all():
            check_target_boxes(targets)  # a NaN/inf ground-truth box is the data's fault: name its image
            raise FloatingPointError("HungarianMatcher: the cost matrix has NaN/inf entries (the predictions "
                                     "diverged); lower the lr or enable gradient clipping")
        matches = []
        for b, image_cost in enumerate(cost.split(sizes, dim=-1)):
            rows, cols = linear_sum_assignment(image_cost[b].numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return matches
