"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021): the module and the choice of core.

Each query looks at ``num_points`` learned sampling locations per head and per feature level, placed
around its reference point, and returns the attention-weighted sum of the bilinearly sampled values.
Two cores compute that sum with the same semantics (docs/models.md, "Deformable attention cores"):

* ``"pytorch"`` (ms_deform_attn_pytorch): one ``F.grid_sample`` per level; backward samples again instead
  of keeping the samples. Any device; the reference and the CPU path.
* ``"triton"`` (ms_deform_attn_triton): a fused Triton kernel, forward and backward, fp32 accumulation for
  fp32 / bf16 / fp16 inputs. CUDA tensors (or the CPU under ``TRITON_INTERPRET=1``, for tests).

The module's ``impl="auto"`` takes Triton on CUDA tensors and the PyTorch path elsewhere, and logs once per
process which core runs. Sampling locations and weights are always computed in fp32, also under autocast:
fp16 locations and weights are the usual cause of NaN gradients in DINO trained with AMP.

Shapes: ``B`` images, ``Nq`` queries, ``Nv = sum(H_l * W_l)`` value tokens (levels flattened and
concatenated fine to coarse), ``M`` heads, ``L`` levels, ``P`` points, ``D`` channels per head.
"""
import logging
import math
from typing import Optional

import torch
from torch import nn

from .ms_deform_attn_pytorch import GridSampleDeformableAttention, SpatialShapes, grid_sample_attention
from .ms_deform_attn_triton import TritonDeformableAttention, triton_unavailable_reason

logger = logging.getLogger(__name__)
IMPLS = ("auto", "pytorch", "triton")
_announced = set()  # cores already logged in this process


def check_impl_name(impl: str) -> None:
    """ValueError naming the bad value unless `impl` is one of IMPLS (caught when the model is built)."""
    if impl not in IMPLS:
        raise ValueError(f"multi-scale deformable attention: impl={impl!r} is not one of {', '.join(IMPLS)}")


def resolve_impl(impl: str, device: torch.device) -> str:
    """The core that runs for `impl` on tensors of `device`: "pytorch" or "triton".

    "auto" is "triton" on CUDA (when Triton imports) and "pytorch" elsewhere; "triton" where it cannot run
    raises a one-line RuntimeError saying why; an unknown name raises ValueError."""
    check_impl_name(impl)
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_unavailable_reason(device) is None else "pytorch"
    if impl == "triton":
        reason = triton_unavailable_reason(device)
        if reason:
            raise RuntimeError(reason)
    return impl


def multi_scale_deformable_attention(value: torch.Tensor, spatial_shapes: SpatialShapes,
                                     sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                                     impl: str = "pytorch") -> torch.Tensor:
    """The sampling core.

    Args:
        value: [B, Nv, M, D].
        spatial_shapes: (H_l, W_l) per level.
        sampling_locations: [B, Nq, M, L, P, 2], (x, y) in [0, 1] of each level's padded map
            (0 and 1 are the outer edges of the border pixels, as ``align_corners=False``).
        attention_weights: [B, Nq, M, L, P] (softmax-ed over L * P by the caller).
        impl: "pytorch", "triton" or "auto" (see `resolve_impl`).
    Returns: [B, Nq, M * D] in value's dtype. Locations outside the map read zeros.
    """
    core = resolve_impl(impl, value.device)
    if core == "pytorch" and (torch.jit.is_tracing() or not torch.is_grad_enabled()):
        # no backward to save memory for: the plain ops, which tracers (fvcore's FLOP count) can also record
        return grid_sample_attention(value, spatial_shapes, sampling_locations, attention_weights)
    function = {"pytorch": GridSampleDeformableAttention, "triton": TritonDeformableAttention}[core]
    return function.apply(value, tuple(map(tuple, spatial_shapes)), sampling_locations, attention_weights)


def _announce(core: str, requested: str, device: torch.device) -> None:
    """Log which core runs, once per core and process (not once per layer)."""
    if core not in _announced:
        _announced.add(core)
        logger.info(f"multi-scale deformable attention: {core} core on {device.type} (impl={requested!r})")


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention module (projections + sampling core); residual and norm live in the layer."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4,
                 impl: str = "auto"):
        super().__init__()
        check_impl_name(impl)
        self.impl = impl
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
        core = resolve_impl(self.impl, query.device)
        _announce(core, self.impl, query.device)
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
            # the kernel reads bf16 / fp16 values directly (fp32 sums): no fp32 copy of value for it
            core_value = value if core == "triton" else value.float()
            output = multi_scale_deformable_attention(core_value, spatial_shapes, locations, weights, impl=core)
        return self.output_proj(output.to(query.dtype))
