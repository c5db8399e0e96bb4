"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021) in plain PyTorch.

Each query looks at ``num_points`` learned sampling locations per head and per feature level, placed
around its reference point, and returns the attention-weighted sum of the bilinearly sampled values.
Sampling is one batched ``F.grid_sample`` per level over every image, head, query and point (a loop
over the few levels only, never over images), accumulated level by level to bound the peak memory.
It always runs in fp32, also under autocast: fp16 sampling locations and weights are the usual cause
of NaN gradients in DINO trained with AMP.

Shapes: ``B`` images, ``Nq`` queries, ``Nv = sum(H_l * W_l)`` value tokens (levels flattened and
concatenated fine to coarse), ``M`` heads, ``L`` levels, ``P`` points, ``D`` channels per head.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

SpatialShapes = Sequence[Tuple[int, int]]


def multi_scale_deformable_attention(value: torch.Tensor, spatial_shapes: SpatialShapes,
                                     sampling_locations: torch.Tensor,
                                     attention_weights: torch.Tensor) -> torch.Tensor:
    """The sampling core.

    Args:
        value: [B, Nv, M, D].
        spatial_shapes: (H_l, W_l) per level.
        sampling_locations: [B, Nq, M, L, P, 2], (x, y) in [0, 1] of each level's padded map
            (0 and 1 are the outer edges of the border pixels, as ``align_corners=False``).
        attention_weights: [B, Nq, M, L, P] (softmax-ed over L * P by the caller).
    Returns: [B, Nq, M * D]. Locations outside the map read zeros.
    """
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2.0 * sampling_locations - 1.0  # grid_sample wants [-1, 1]
    # [B, Nq, M, L, P] -> [B*M, 1, Nq, L, P]
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, num_queries, num_levels, num_points)
    output = 0
    for level, (h, w) in enumerate(spatial_shapes):
        # [B, h*w, M, D] -> [B*M, D, h, w]
        level_value = values[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        # [B, Nq, M, P, 2] -> [B*M, Nq, P, 2]
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # [B*M, D, Nq, P]
        # accumulate level by level: the peak memory stays one level's samples
        output = output + (sampled * weights[..., level, :]).sum(-1)  # [B*M, D, Nq]
    return output.view(batch, heads * head_dim, num_queries).transpose(1, 2).contiguous()


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention module (projections + sampling core); residual and norm live in the layer."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"MultiScaleDeformableAttention: embed_dim={embed_dim} is not divisible by "
                             f"num_heads={num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self):
        """Deformable DETR's init: offsets start on a ring of directions (one per head), k-th point k pixels out."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                spatial_shapes: SpatialShapes, value_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            query: [B, Nq, C] (content + position).
            reference_points: [B, Nq, L, 2] points (x, y) or [B, Nq, L, 4] boxes (cx, cy, w, h), normalised
                to each level's padded map, i.e. already multiplied by the level's valid ratios.
            value: [B, Nv, C] flattened multi-level features.
            spatial_shapes: (H_l, W_l) of each level's padded map.
            value_valid: [B, Nv] bool, True on real pixels; padding tokens are zeroed so never read.
        Returns: [B, Nq, C].
        """
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        if len(spatial_shapes) != levels:
            raise ValueError(f"MultiScaleDeformableAttention built for {levels} levels got {len(spatial_shapes)}")
        value = self.value_proj(value)
        if value_valid is not None:
            value = value.masked_fill(~value_valid[..., None], 0.0)
        value = value.view(batch, -1, heads, self.embed_dim // heads)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)

        with torch.autocast(device_type=query.device.type, enabled=False):
            offsets, weights, reference_points = offsets.float(), weights.float(), reference_points.float()
            weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
            if reference_points.shape[-1] == 2:  # offsets in pixels of each level
                size_xy = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=torch.float32,
                                       device=query.device)
                locations = reference_points[:, :, None, :, None, :] + offsets / size_xy[None, None, None, :, None, :]
            elif reference_points.shape[-1] == 4:  # offsets relative to half the box size
                centre, wh = reference_points[:, :, None, :, None, :2], reference_points[:, :, None, :, None, 2:]
                locations = centre + offsets / points * wh * 0.5
            else:
                raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}")
            output = multi_scale_deformable_attention(value.float(), spatial_shapes, locations, weights)
        return self.output_proj(output.to(query.dtype))
