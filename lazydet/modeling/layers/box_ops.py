"""Box helpers shared by the DINO head, matcher, criterion and post-processing.

Boxes inside the detector are normalised ``(cx, cy, w, h)`` in [0, 1] relative to the unpadded image;
torchvision's box ops do the conversions and the IoU maths.
"""
import torch
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["inverse_sigmoid", "box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "generalized_box_iou"]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """logit(x) of any-shaped ``x`` in [0, 1] (same shape out), x clamped to [eps, 1 - eps].

    eps = 1e-3 as in detrex (``detrex/utils/misc.py``) and IDEA-Research DINO (``util/misc.py``): a box
    at the border of the image enters the refinement as logit +-6.9, not +-11.5.
    """
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x0, y0, x1, y1), any units."""
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] (x0, y0, x1, y1) -> [..., 4] (cx, cy, w, h), any units."""
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")
