"""Sine position encodings: for feature maps (respecting padding masks) and for box coordinates.

The feature-map encoding counts only real pixels (cumulative sum over the mask), so a padded image gets
the same encoding on its real pixels as the unpadded image would; with ``normalize=True`` the
coordinates are scaled to [0, 2*pi] over the real extent of each image.
"""
import math

import torch
from torch import nn


def _sine_cosine(coords: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """[..., ] coordinates -> [..., num_feats] interleaved sin/cos at geometric frequencies."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = coords[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """DETR's 2D sine encoding: ``forward(mask [B,H,W] True on real pixels) -> [B, 2*num_pos_feats, H, W]``.

    Channels are ``(y features, x features)``. ``offset`` shifts the pixel index before normalising
    (detrex's DINO uses -0.5, i.e. pixel centres).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True,
                 scale: float = 2 * math.pi, offset: float = -0.5, eps: float = 1e-6):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.offset = offset
        self.eps = eps

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask [B, H, W]`` (True on real pixels) -> ``[B, 2 * num_pos_feats, H, W]`` float32."""
        real = mask.to(torch.float32)
        y_embed = real.cumsum(1)
        x_embed = real.cumsum(2)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        pos_y = _sine_cosine(y_embed, self.num_pos_feats, self.temperature)
        pos_x = _sine_cosine(x_embed, self.num_pos_feats, self.temperature)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)


def get_sine_pos_embed(boxes: torch.Tensor, num_pos_feats: int = 128, temperature: float = 10000.0,
                       scale: float = 2 * math.pi) -> torch.Tensor:
    """Encode each coordinate of ``boxes [..., K]`` (in [0, 1]) -> ``[..., K * num_pos_feats]``.

    Order follows DAB-DETR / DINO: for a 4D box the result is ``(y, x, w, h)`` feature blocks.
    """
    embeds = [_sine_cosine(boxes[..., i] * scale, num_pos_feats, temperature) for i in range(boxes.shape[-1])]
    if len(embeds) >= 2:  # (x, y, ...) -> (y, x, ...)
        embeds[0], embeds[1] = embeds[1], embeds[0]
    return torch.cat(embeds, dim=-1)
