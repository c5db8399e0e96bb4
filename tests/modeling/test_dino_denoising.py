"""Contrastive denoising: query layout and shapes, noise bounds, label flips, the attention mask."""
import pytest
import torch

from lazydet.modeling.dino import (DenoisingMeta, Predictions, dn_attention_mask, prepare_contrastive_denoising,
                                   split_predictions)
from lazydet.modeling.dino.denoising import noise_boxes, noise_labels
from lazydet.modeling.dino.transformer import DecoderLayer
from lazydet.modeling.layers import box_cxcywh_to_xyxy


def make_targets():
    return [{"labels": torch.tensor([1, 2, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4],
                                                                        [0.5, 0.7, 0.1, 0.2]])},
            {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
            {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]


def test_shapes_and_layout_without_noise():
    embedding = torch.nn.Embedding(5, 8)
    dn = prepare_contrastive_denoising(make_targets(), dn_number=10, label_noise_ratio=0.0, box_noise_scale=0.0,
                                       num_classes=5, label_embedding=embedding, num_matching=7)
    content, boxes, mask, meta = dn.content, dn.boxes_unact, dn.attn_mask, dn.meta
    assert (meta.num_groups, meta.pad) == (3, 3)  # 10 // 3 groups of (3 positives + 3 negatives)
    assert content.shape == (3, 18, 8) and boxes.shape == (3, 18, 4) and mask.shape == (25, 25)
    for b, t in enumerate(make_targets()):
        n = len(t["labels"])
        for g in range(meta.num_groups):
            for offset in (0, meta.pad):  # positive and negative copies
                start = g * meta.group_size + offset
                torch.testing.assert_close(boxes[b, start:start + n].sigmoid(), t["boxes"], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(content[b, start:start + n], embedding(t["labels"]))
                assert (content[b, start + n:start + meta.pad] == 0).all()  # padding slots
                assert (boxes[b, start + n:start + meta.pad] == 0).all()
        q, tgt = meta.positive_indices(n)
        assert q.tolist() == [g * 6 + j for g in range(3) for j in range(n)] and tgt.tolist() == list(range(n)) * 3
    assert prepare_contrastive_denoising(make_targets(), 0, 0.5, 1.0, 5, embedding, 7) is None  # disabled
    empty = prepare_contrastive_denoising(make_targets()[2:], 10, 0.5, 1.0, 5, embedding, 7)  # no box at all
    assert empty.meta.num_queries == 0 and empty.content.shape == (1, 0, 8) and empty.attn_mask is None


def test_prepend_and_split_are_inverse():
    """The decoder sees [denoising | matching]; split_predictions gives each part back."""
    embedding = torch.nn.Embedding(5, 8)
    dn = prepare_contrastive_denoising(make_targets(), 10, 0.5, 1.0, 5, embedding, num_matching=7)
    content, reference = torch.randn(3, 7, 8), torch.rand(3, 7, 4)
    tgt, boxes = dn.prepend_to(content, reference)
    assert tgt.shape == (3, 18 + 7, 8) and boxes.shape == (3, 25, 4)
    decoded = Predictions(logits=torch.stack([tgt[..., :5], tgt[..., 3:]]), boxes=torch.stack([boxes, boxes]))
    matching, denoising = split_predictions(decoded, dn)
    torch.testing.assert_close(matching.logits[1], content[..., 3:])
    torch.testing.assert_close(matching.boxes[0], reference)
    torch.testing.assert_close(denoising.logits[0], dn.content[..., :5])
    torch.testing.assert_close(denoising.boxes[1], dn.boxes_unact.sigmoid())
    everything, nothing = split_predictions(decoded, None)
    assert everything is decoded and nothing is None


def test_box_noise_bounds():
    g = torch.Generator().manual_seed(0)
    n = 20000
    boxes = torch.cat([torch.rand(n, 2, generator=g) * 0.2 + 0.4, torch.rand(n, 2, generator=g) * 0.1 + 0.05], 1)
    negative = torch.arange(n) % 2 == 1
    scale = 0.8
    noised = noise_boxes(boxes, negative, scale, generator=g)
    shift = (box_cxcywh_to_xyxy(noised) - box_cxcywh_to_xyxy(boxes)).abs()  # no clamping: boxes are central
    half = boxes[:, 2:].repeat(1, 2) * 0.5 * scale
    ratio = shift / half
    assert (ratio[~negative] <= 1.0 + 1e-4).all()  # positives: within scale * (w, h) / 2
    assert (ratio[negative] >= 1.0 - 1e-4).all() and (ratio[negative] <= 2.0 + 1e-4).all()
    assert ratio[~negative].max() > 0.95 and ratio[negative].max() > 1.95  # the whole range is used
    # clamped to the image
    edge = noise_boxes(torch.tensor([[0.02, 0.98, 0.04, 0.04]]).repeat(100, 1), torch.ones(100, dtype=torch.bool), 1.0)
    corners = box_cxcywh_to_xyxy(edge)
    assert (corners >= -1e-6).all() and (corners <= 1 + 1e-6).all()


def test_label_flip_ratio():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (40000,), generator=g)
    noised = noise_labels(labels, label_noise_ratio=0.5, num_classes=10, generator=g)
    changed = (noised != labels).float().mean().item()
    assert changed == pytest.approx(0.5 * 0.5 * 0.9, abs=0.01)  # p/2 redrawn, 1/10 redraw the same class
    assert noised.min() >= 0 and noised.max() < 10


@pytest.mark.parametrize("groups,pad,matching", [(1, 1, 3), (3, 2, 5), (4, 3, 0)])
def test_attention_mask_blocks_exactly_the_forbidden_pairs(groups, pad, matching):
    meta = DenoisingMeta(num_groups=groups, pad=pad)
    mask = dn_attention_mask(meta, matching)
    num_dn = groups * 2 * pad
    group = lambda i: i // (2 * pad)
    for i in range(num_dn + matching):
        for j in range(num_dn + matching):
            forbidden = (j < num_dn) and (i >= num_dn or group(i) != group(j))
            assert mask[i, j].item() == forbidden, (i, j)


def test_masked_decoder_layer_keeps_groups_and_matching_queries_apart():
    """Perturbing one denoising group changes no other query's output."""
    torch.manual_seed(0)
    meta, matching, dim = DenoisingMeta(num_groups=3, pad=2), 4, 16
    layer = DecoderLayer(dim, num_heads=2, feedforward_dim=32, dropout=0.0, num_levels=1, num_points=2).eval()
    total = meta.num_queries + matching
    tgt, pos = torch.randn(1, total, dim), torch.randn(1, total, dim)
    ref = torch.rand(1, total, 1, 4) * 0.5 + 0.25
    memory = torch.randn(1, 12, dim)
    mask = dn_attention_mask(meta, matching)
    run = lambda t: layer(t, pos, ref, memory, [(3, 4)], None, mask)
    base = run(tgt)
    perturbed = tgt.clone()
    perturbed[:, 4:8] += 5.0  # group 1
    out = run(perturbed)
    untouched = torch.ones(total, dtype=torch.bool)
    untouched[4:8] = False
    torch.testing.assert_close(out[:, untouched], base[:, untouched])
    assert not torch.allclose(out[:, 4:8], base[:, 4:8])
