"""Focal, L1 and GIoU losses against hand-computed values; loss names, weights and empty images."""
import pytest
import torch

from dino_reference import focal_term, giou
from lazydet.modeling.dino import DenoisingMeta, DINOCriterion, DINOOutputs, HungarianMatcher, Predictions

PRED_BOX = [0.40, 0.50, 0.20, 0.30]
GT_BOX = [0.45, 0.55, 0.30, 0.20]


def one_image():
    logits = torch.tensor([[[1.0, -2.0], [0.5, 0.3]]])  # 2 queries, 2 classes
    boxes = torch.tensor([[PRED_BOX, [0.1, 0.1, 0.1, 0.1]]])
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([GT_BOX])}]
    return logits, boxes, targets


def test_each_loss_matches_the_hand_computation():
    logits, boxes, targets = one_image()
    criterion = DINOCriterion(num_classes=2, matcher=HungarianMatcher())
    losses = criterion.set_losses(Predictions(logits, boxes), targets, [(torch.tensor([0]), torch.tensor([0]))],
                                  num_boxes=2.0)
    focal = (focal_term(1.0, True) + focal_term(-2.0, False) + focal_term(0.5, False) + focal_term(0.3, False)) / 2
    l1 = sum(abs(a - b) for a, b in zip(PRED_BOX, GT_BOX)) / 2
    assert losses["loss_class"].item() == pytest.approx(focal, rel=1e-5)
    assert losses["loss_bbox"].item() == pytest.approx(l1, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx((1 - giou(PRED_BOX, GT_BOX)) / 2, rel=1e-5)
    # a hand case for GIoU itself: disjoint unit squares one apart -> IoU 0, hull 3 x 1 -> GIoU = -1/3
    assert giou([0.5, 0.5, 1, 1], [2.5, 0.5, 1, 1]) == pytest.approx(-1 / 3)


def test_forward_weights_names_and_sets():
    logits, boxes, targets = one_image()
    out = DINOOutputs(layers=Predictions(torch.stack([logits] * 3), torch.stack([boxes] * 3)),
                      encoder=Predictions(logits, boxes))
    losses = DINOCriterion(num_classes=2, matcher=HungarianMatcher())(out, targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("", "_0", "_1", "_enc")}
    # query 0 is the obvious match: weights 1 / 5 / 2, one box
    l1 = sum(abs(a - b) for a, b in zip(PRED_BOX, GT_BOX))
    assert losses["loss_bbox_0"].item() == pytest.approx(5 * l1, rel=1e-5)
    assert losses["loss_giou_enc"].item() == pytest.approx(2 * (1 - giou(PRED_BOX, GT_BOX)), rel=1e-5)
    custom = DINOCriterion(2, HungarianMatcher(), weight_dict={"loss_class": 1, "loss_bbox": 5, "loss_giou": 2,
                                                               "loss_bbox_enc": 0.0})(out, targets)
    assert custom["loss_bbox_enc"].item() == 0.0 and custom["loss_bbox"].item() > 0


def test_images_without_boxes_give_background_only_losses():
    logits = torch.tensor([[[1.0, -2.0]], [[0.2, 0.1]]], requires_grad=True)
    boxes = torch.rand(2, 1, 4, requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    out = DINOOutputs(layers=Predictions(logits[None], boxes[None]), encoder=Predictions(logits, boxes))
    losses = DINOCriterion(2, HungarianMatcher())(out, [empty, empty])
    focal = sum(focal_term(v, False) for v in (1.0, -2.0, 0.2, 0.1))  # num_boxes clamps to 1
    assert losses["loss_class"].item() == pytest.approx(focal, rel=1e-5)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(boxes.grad).all()


def test_denoising_losses_use_the_fixed_assignment():
    meta = DenoisingMeta(num_groups=2, pad=1)  # queries: [pos0, neg0, pos1, neg1]
    logits = torch.tensor([[[2.0], [-1.0], [0.5], [0.0]]])
    boxes = torch.tensor([[PRED_BOX, [0.1] * 4, GT_BOX, [0.2] * 4]])
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([GT_BOX])}]
    criterion = DINOCriterion(1, HungarianMatcher())
    losses = criterion.denoising_losses(Predictions(logits[None], boxes[None]), meta, targets, 1.0)
    num = 1.0 * meta.num_groups  # boxes x groups
    focal = (focal_term(2.0, True) + focal_term(-1.0, False) + focal_term(0.5, True) + focal_term(0.0, False)) / num
    l1 = sum(abs(a - b) for a, b in zip(PRED_BOX, GT_BOX)) / num  # second positive is exact
    assert losses["loss_class_dn"].item() == pytest.approx(focal, rel=1e-5)
    assert losses["loss_bbox_dn"].item() == pytest.approx(5 * l1, rel=1e-5)
