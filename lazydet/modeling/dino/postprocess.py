"""From DINO's normalised predictions to detections in original-image pixels.

Scores are sigmoid probabilities of every (query, class) pair; the top ``num_select`` pairs over all
queries x classes are kept (a query can yield several classes), as in Deformable DETR / detrex.
Boxes are normalised to the transformed, unpadded image ``size`` (h, w); the mapping to the original
image is a per-axis scale ``orig_size / size`` (the transforms are resizes, plus padding that the
normalisation already excludes).
"""
from typing import List

import torch

from ..layers import box_cxcywh_to_xyxy


def boxes_to_original_pixels(boxes: torch.Tensor, size, orig_size) -> torch.Tensor:
    """[K, 4] cxcywh normalised to ``size`` (h, w) -> [K, 4] xyxy pixels of ``orig_size`` (h, w), clipped."""
    orig_h, orig_w = float(orig_size[0]), float(orig_size[1])
    scale = torch.tensor([orig_w, orig_h, orig_w, orig_h], dtype=torch.float32, device=boxes.device)
    # normalised * size gives pixels of the resized image; * orig/size maps them back: the sizes cancel.
    xyxy = box_cxcywh_to_xyxy(boxes.float()) * scale
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0.0, orig_w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0.0, orig_h)
    return xyxy


@torch.no_grad()
def post_process(pred_logits: torch.Tensor, pred_boxes: torch.Tensor, sizes, orig_sizes,
                 num_select: int = 300) -> List[dict]:
    """[B, Q, K] logits, [B, Q, 4] cxcywh boxes -> per image {boxes xyxy [k, 4], scores [k], labels [k]}."""
    batch, num_queries, num_classes = pred_logits.shape
    prob = pred_logits.float().sigmoid().flatten(1)
    k = min(num_select, prob.shape[1])
    scores, flat_index = prob.topk(k, dim=1)
    query_index = torch.div(flat_index, num_classes, rounding_mode="floor")
    labels = flat_index % num_classes
    boxes = torch.gather(pred_boxes.float(), 1, query_index[..., None].expand(-1, -1, 4))
    return [{"boxes": boxes_to_original_pixels(boxes[b], sizes[b], orig_sizes[b]), "scores": scores[b],
             "labels": labels[b]} for b in range(batch)]
