"""Box helpers shared by the DINO head, matcher, criterion and post-processing.

Boxes inside the detector are normalised ``(cx, cy, w, h)`` in [0, 1] relative to the unpadded image;
torchvision's box ops do the conversions and the IoU maths.
"""
import torch
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["inverse_sigmoid", "box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "generalized_box_iou"]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [eps, 1 - eps], so refined boxes at the border stay finite."""
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")
