"""SimpleFeaturePyramid (ViTDet, Li et al. 2022): a multi-scale pyramid from a plain ViT's single map.

Each level rescales the stride-p map (transposed convs up, max-pool down), then projects it with a
1x1 and a 3x3 conv, each followed by a channel LayerNorm. An optional extra level max-pools the
coarsest one. Padding masks are carried along: the input mask is padded like the ViT pads the image and
resized (nearest) to every level.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

__all__ = ["SimpleFeaturePyramid"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "LN":
        return LayerNorm2d(channels)
    if kind == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind in ("", None, "none"):
        return nn.Identity()
    raise ValueError(f"model.backbone.norm={kind!r}: expected 'LN', 'GN' or ''")


def _rescale(scale: float, dim: int, norm: str) -> Tuple[nn.Module, int]:
    """Layers that resize a map by `scale` (4, 2, 1, 0.5, 0.25); returns them and their output channels."""
    if scale == 4.0:
        layers = [
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
            _norm(norm, dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
        ]
        return nn.Sequential(*layers), dim // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), dim // 2
    if scale == 1.0:
        return nn.Identity(), dim
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2), dim
    if scale == 0.25:
        return nn.MaxPool2d(4, stride=4), dim
    raise ValueError(f"model.backbone.scale_factors: {scale} is not one of 4.0, 2.0, 1.0, 0.5, 0.25")


class SimpleFeaturePyramid(nn.Module):
    """`features, masks = sfp(images, mask)`: lists fine to coarse, `out_channels` each.

    Args:
        net: a backbone with `forward(images) -> [B, C, H/p, W/p]` and attributes `embed_dim`, `patch_size`.
        out_channels: channels of every level.
        scale_factors: resize factors applied to the stride-p map, fine to coarse.
        top_block: add a level max-pooled (kernel 1, stride 2) from the coarsest one.
        norm: "LN" (channel LayerNorm, as ViTDet), "GN" or "" (none; convs get a bias).
    """

    def __init__(
        self,
        net: nn.Module,
        out_channels: int = 256,
        scale_factors: Sequence[float] = (2.0, 1.0, 0.5),
        top_block: bool = True,
        norm: str = "LN",
    ):
        super().__init__()
        self.net = net
        dim, patch = int(net.embed_dim), int(net.patch_size)
        self.patch_size = patch
        self.scale_factors = tuple(float(s) for s in scale_factors)
        if list(self.scale_factors) != sorted(self.scale_factors, reverse=True):
            raise ValueError(f"model.backbone.scale_factors={tuple(scale_factors)}: must be decreasing (fine to coarse)")
        use_bias = norm in ("", None, "none")
        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            rescale, channels = _rescale(scale, dim, norm)
            self.stages.append(
                nn.Sequential(
                    rescale,
                    nn.Conv2d(channels, out_channels, 1, bias=use_bias),
                    _norm(norm, out_channels),
                    nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=use_bias),
                    _norm(norm, out_channels),
                )
            )
        self.top_block = bool(top_block)
        strides = [int(round(patch / s)) for s in self.scale_factors]
        if self.top_block:
            strides.append(strides[-1] * 2)
        self.strides: List[int] = strides
        self.num_levels = len(strides)
        self.out_channels = int(out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.stages.modules():
            if isinstance(m, nn.Conv2d):  # c2_msra_fill, as detectron2's convs
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        """images `[B, 3, H, W]` normalised, mask `[B, H, W]` True on real pixels (None: all real)."""
        b, _, h, w = images.shape
        if mask is None:
            mask = torch.ones(b, h, w, dtype=torch.bool, device=images.device)
        x = self.net(images)
        features = [stage(x) for stage in self.stages]
        if self.top_block:
            features.append(F.max_pool2d(features[-1], kernel_size=1, stride=2))
        # The ViT zero-pads the image to a multiple of the patch size: pad the mask the same way.
        gh, gw = x.shape[-2:]
        padded = F.pad(mask, (0, gw * self.patch_size - w, 0, gh * self.patch_size - h), value=False)
        masks = [
            F.interpolate(padded[:, None].float(), size=f.shape[-2:], mode="nearest")[:, 0].bool()
            for f in features
        ]
        return features, masks
