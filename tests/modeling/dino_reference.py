"""Independent scalar implementations (plain Python math) used by the DINO tests as ground truth."""
import math


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def xyxy(box):
    cx, cy, w, h = box
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def giou(a, b):
    """Generalized IoU of two cxcywh boxes (Rezatofighi et al. 2019)."""
    ax0, ay0, ax1, ay1 = xyxy(a)
    bx0, by0, bx1, by1 = xyxy(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def focal_term(logit, is_target, alpha=0.25, gamma=2.0):
    """Sigmoid focal loss of one (query, class) entry (Lin et al. 2017)."""
    p = sigmoid(logit)
    if is_target:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p ** gamma * math.log(1 - p)


def match_cost(logits, box, label, target_box, w_class=2.0, w_bbox=5.0, w_giou=2.0, alpha=0.25, gamma=2.0):
    p = sigmoid(logits[label])
    pos = alpha * (1 - p) ** gamma * -math.log(p + 1e-8)
    neg = (1 - alpha) * p ** gamma * -math.log(1 - p + 1e-8)
    l1 = sum(abs(u - v) for u, v in zip(box, target_box))
    return w_class * (pos - neg) + w_bbox * l1 - w_giou * giou(box, target_box)
