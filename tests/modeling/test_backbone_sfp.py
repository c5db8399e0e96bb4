"""SimpleFeaturePyramid: level shapes and strides from formulas, masks against a per-pixel computation."""
import math

import pytest
import torch

from lazydet.modeling.backbone import DINOv2ViT, SimpleFeaturePyramid


def _expected_mask(real_h, real_w, size, out_hw):
    """Per cell: is the padded-frame pixel that nearest-neighbour sampling picks a real one?"""
    ph, pw = math.ceil(size[0] / 14) * 14, math.ceil(size[1] / 14) * 14
    rows = (torch.arange(out_hw[0]) * (ph / out_hw[0])).floor()
    cols = (torch.arange(out_hw[1]) * (pw / out_hw[1])).floor()
    return (rows[:, None] < real_h) & (cols[None, :] < real_w)


def _sfp(**kw):
    torch.manual_seed(0)
    net = DINOv2ViT("vit_small_patch14_dinov2.lvd142m", embed_dim=48, depth=1, num_heads=3, img_size=70)
    return SimpleFeaturePyramid(net, out_channels=32, **kw).eval()


@pytest.mark.parametrize("hw", [(100, 130), (70, 70), (57, 200)])
def test_levels_shapes_and_strides(hw):
    sfp = _sfp()
    h, w = hw
    features, masks = sfp(torch.randn(2, 3, h, w), torch.ones(2, h, w, dtype=torch.bool))
    assert sfp.strides == [7, 14, 28, 56] and sfp.num_levels == 4 and sfp.out_channels == 32
    gh, gw = math.ceil(h / 14), math.ceil(w / 14)
    p5 = (gh // 2, gw // 2)
    expected = [(2 * gh, 2 * gw), (gh, gw), p5, (math.ceil(p5[0] / 2), math.ceil(p5[1] / 2))]
    assert [tuple(f.shape[-2:]) for f in features] == expected
    assert [tuple(m.shape[-2:]) for m in masks] == expected
    assert all(f.shape[:2] == (2, 32) for f in features)
    for m in masks:  # all pixels real: only the ViT's own padding to a multiple of 14 is masked
        assert m.dtype == torch.bool
        assert torch.equal(m[0], _expected_mask(h, w, (h, w), m.shape[-2:]))


def test_masks_follow_padding():
    """Each mask cell is True iff the input pixel at the cell's sampling point (nearest) is real."""
    sfp = _sfp()
    h, w = 112, 140
    mask = torch.zeros(2, h, w, dtype=torch.bool)
    mask[0] = True
    mask[1, :60, :90] = True  # image 2 is 60x90, padded
    _, masks = sfp(torch.randn(2, 3, h, w), mask)
    for stride, m in zip(sfp.strides, masks):
        assert m[0].all()
        assert torch.equal(m[1], _expected_mask(60, 90, (h, w), m.shape[-2:])), stride
        # the real region covers about 60/h x 90/w of the map at every level
        assert abs(m[1].any(1).sum().item() - 60 / stride) <= 1
        assert abs(m[1].any(0).sum().item() - 90 / stride) <= 1


def test_mask_defaults_to_all_real_and_padding_uses_patch_grid():
    sfp = _sfp()
    # 100x130 is padded to 112x140 inside the ViT: the mask must be padded the same way (False).
    features, masks = sfp(torch.randn(1, 3, 100, 130))
    assert masks[1].shape[-2:] == (8, 10)
    assert masks[1].all(), "sampling points of the stride-14 level fall inside the 100x130 image"
    features, masks = sfp(torch.randn(1, 3, 100, 130), torch.ones(1, 100, 130, dtype=torch.bool))
    assert not masks[0][0, -1].any(), "last stride-7 row samples pixel 104 >= 100: padding"


def test_scale_factor_validation_and_other_pyramids():
    sfp = _sfp(scale_factors=(4.0, 2.0, 1.0, 0.5), top_block=False, norm="GN")
    features, masks = sfp(torch.randn(1, 3, 70, 70))
    assert sfp.strides == [4, 7, 14, 28] and [f.shape[-1] for f in features] == [20, 10, 5, 2]
    with pytest.raises(ValueError, match="scale_factors"):
        _sfp(scale_factors=(3.0,))
    with pytest.raises(ValueError, match="decreasing"):
        _sfp(scale_factors=(0.5, 1.0))


def test_gradients_reach_the_vit():
    sfp = _sfp().train()
    features, _ = sfp(torch.randn(1, 3, 70, 84))
    sum(f.mean() for f in features).backward()
    assert sfp.net.vit.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in sfp.stages.parameters())
