"""The whole detector on a tiny stand-in backbone: losses, eval format, gradients, empty images,
look-forward-twice, padding invariance of the transformer, and overfitting one batch."""
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou

from lazydet.modeling.dino import (DINO, DINOCriterion, DINOTransformer, DINOTransformerDecoder,
                                   DINOTransformerEncoder, HungarianMatcher)
from lazydet.modeling.layers import PositionEmbeddingSine


class StandInBackbone(nn.Module):
    """`num_levels` levels (strides 8, 16, 32, ...) of `channels` channels with the backbone contract; features
    are zero on padding."""

    def __init__(self, channels: int = 24, num_levels: int = 4):
        super().__init__()
        self.out_channels, self.num_levels = channels, num_levels
        self.strides = [8 * 2 ** level for level in range(num_levels)]
        self.stem = nn.Conv2d(3, channels, 8, 8)
        self.downs = nn.ModuleList(nn.Conv2d(channels, channels, 3, 2, 1) for _ in range(num_levels - 1))

    def forward(self, images, mask):
        features, masks = [], []
        x = images
        for layer in [self.stem, *self.downs]:
            x = layer(x).relu()
            m = F.interpolate(mask[:, None].float(), size=x.shape[-2:], mode="nearest")[:, 0].bool()
            x = x * m[:, None]
            features.append(x)
            masks.append(m)
        return features, masks


def tiny_dino(embed_dim=32, num_classes=3, num_queries=20, dn_number=6, layers=2, look_forward_twice=True):
    encoder = DINOTransformerEncoder(embed_dim, 4, 64, 0.0, layers, 4, 4)
    decoder = DINOTransformerDecoder(embed_dim, 4, 64, 0.0, layers, 4, 4, look_forward_twice=look_forward_twice)
    return DINO(StandInBackbone(), DINOTransformer(encoder, decoder, 4),
                DINOCriterion(num_classes, HungarianMatcher()), PositionEmbeddingSine(embed_dim // 2),
                embed_dim=embed_dim, num_classes=num_classes, num_queries=num_queries, dn_number=dn_number)


def tiny_batch(empty=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(2, 3, 96, 128, dtype=torch.uint8)
    mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    sizes = [(96, 128), (64, 96)]
    boxes = [torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.7, 0.6, 0.4, 0.5]]), torch.tensor([[0.5, 0.5, 0.5, 0.4]])]
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    targets = []
    for b, (h, w) in enumerate(sizes):
        images[b, :, :h, :w] = torch.randint(0, 60, (3, h, w), generator=g, dtype=torch.uint8)
        for box, label in zip(boxes[b], labels[b]):  # paint each box with a class colour
            x0, y0 = int((box[0] - box[2] / 2) * w), int((box[1] - box[3] / 2) * h)
            x1, y1 = int((box[0] + box[2] / 2) * w), int((box[1] + box[3] / 2) * h)
            images[b, label, y0:y1, x0:x1] = 250
        mask[b, :h, :w] = True
        keep = slice(0, 0) if b in empty else slice(None)
        targets.append({"labels": labels[b][keep], "boxes": boxes[b][keep], "size": torch.tensor([h, w]),
                        "orig_size": torch.tensor([2 * h, 2 * w]), "image_id": b})
    return {"images": images, "pixel_mask": mask, "targets": targets}


def expected_loss_names(layers=2):
    suffixes = ["", "_enc", "_dn"] + [f"_{i}" for i in range(layers - 1)] + [f"_dn_{i}" for i in range(layers - 1)]
    return {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in suffixes}


def test_training_losses_and_gradient_to_every_parameter():
    torch.manual_seed(0)
    model = tiny_dino().train()
    losses = model(tiny_batch())
    assert set(losses) == expected_loss_names()
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    # Zero-initialised layers (box head outputs, deformable offsets/weights) block some gradients at step 0
    # by design; after two updates every parameter must receive a gradient.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        sum(model(tiny_batch()).values()).backward()
        if _ < 2:
            optimizer.step()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert no_grad == []


def test_eval_output_format_in_original_pixels():
    torch.manual_seed(0)
    model = tiny_dino().eval()
    with torch.no_grad():
        results = model(tiny_batch())
    assert len(results) == 2
    for r, (h, w) in zip(results, [(192, 256), (128, 192)]):  # orig_size = 2 x size
        assert r["boxes"].shape == (20 * 3, 4) and r["scores"].shape == (60,) and r["labels"].dtype == torch.int64
        assert (r["boxes"][:, 0::2] <= w).all() and (r["boxes"][:, 1::2] <= h).all() and (r["boxes"] >= 0).all()
        assert (r["scores"][:-1] >= r["scores"][1:]).all()
    assert model.pixel_mean.shape == model.pixel_std.shape == (3, 1, 1) and model.num_classes == 3


@pytest.mark.parametrize("empty", [(1,), (0, 1)])
def test_images_without_boxes(empty):
    torch.manual_seed(0)
    model = tiny_dino().train()
    losses = model(tiny_batch(empty=empty))
    assert set(losses) == expected_loss_names()
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    if empty == (0, 1):
        assert losses["loss_bbox"].item() == 0.0 and losses["loss_class_dn"].item() == 0.0
        assert model.label_enc.weight.grad is not None  # still in the graph (DDP needs every parameter used)


@pytest.mark.parametrize("look_forward_twice", [True, False])
def test_look_forward_twice_gradient_reaches_the_previous_box_head(look_forward_twice):
    torch.manual_seed(0)
    model = tiny_dino(look_forward_twice=look_forward_twice).train()
    model.criterion.weight_dict.update({name: 0.0 for name in expected_loss_names()})
    model.criterion.weight_dict["loss_bbox"] = 5.0  # only the last layer's L1 loss counts
    nn.init.normal_(model.heads.bbox_embed[0].layers[-1].weight, std=0.01)
    sum(model(tiny_batch()).values()).backward()
    grad = model.heads.bbox_embed[0].layers[-1].weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == look_forward_twice


def test_transformer_ignores_padding():
    """Features padded with garbage (and their masks) give the unpadded image's boxes and logits."""
    torch.manual_seed(0)
    model = tiny_dino(num_queries=15).eval()
    for head in model.heads.bbox_embed:  # non-zero box deltas, so the boxes depend on the decoder too
        nn.init.normal_(head.layers[-1].weight, std=0.1)
    real, padded = [(8, 12), (4, 6), (2, 3), (1, 2)], [(10, 16), (5, 8), (3, 4), (2, 2)]
    feats = [torch.randn(1, 32, h, w) for h, w in real]
    pfeats, pmasks = [], []
    for f, (h, w) in zip(feats, padded):
        canvas = torch.randn(1, 32, h, w) * 10
        canvas[..., :f.shape[2], :f.shape[3]] = f
        m = torch.zeros(1, h, w, dtype=torch.bool)
        m[:, :f.shape[2], :f.shape[3]] = True
        pfeats.append(canvas)
        pmasks.append(m)
    masks = [torch.ones(1, h, w, dtype=torch.bool) for h, w in real]

    def run(features, ms):
        pos = [model.position_embedding(m) for m in ms]
        with torch.no_grad():
            out = model.transformer(features, ms, pos, model.tgt_embed.weight[:15], model.heads)
        return out.decoder.boxes[-1], out.decoder.logits[-1]

    boxes, logits = run(feats, masks)
    pboxes, plogits = run(pfeats, pmasks)
    torch.testing.assert_close(pboxes, boxes, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plogits, logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_tiny_model_overfits_one_batch():
    """Same images, same denoising noise (re-seeded) every step: the loss must fall by >= 90% and the
    eval-mode top detections must then be the ground truth."""
    torch.manual_seed(0)
    model = tiny_dino(embed_dim=64, num_queries=30).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    batch = tiny_batch()
    losses, start = [], time.time()
    for _ in range(100):
        torch.manual_seed(1234)  # the same denoising queries every step
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"overfit: total loss {losses[0]:.3f} -> {losses[-1]:.3f} in {time.time() - start:.1f}s")
    assert losses[-1] <= 0.1 * losses[0]

    model.eval()
    with torch.no_grad():
        results = model(batch)
    for result, target in zip(results, batch["targets"]):
        h, w = target["orig_size"].tolist()
        gt = box_convert(target["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
        top = slice(0, len(gt))
        iou = box_iou(gt, result["boxes"][top])
        best = iou.max(1)
        assert (best.values > 0.5).all()
        assert result["labels"][top][best.indices].tolist() == target["labels"].tolist()
