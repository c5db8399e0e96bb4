"""The PyTorch path of multi-scale deformable attention: ``F.grid_sample`` per level, with a backward that
recomputes the samples instead of keeping them.

Plain autograd through ``grid_sample_attention`` would keep every sampled value for backward
([B * M, D, Nq, P] per level, per layer: ~1.4 GB over DINO's 6 encoder layers at 512 px, batch 2).
``GridSampleDeformableAttention`` runs the same forward without recording it and, in backward, samples
again one level at a time and calls grid_sample's own backward, so between forward and backward only the
inputs are kept. Works on any device and dtype that ``grid_sample`` supports.

Shapes: ``B`` images, ``Nq`` queries, ``Nv = sum(H_l * W_l)`` value tokens (levels flattened and
concatenated fine to coarse), ``M`` heads, ``L`` levels, ``P`` points, ``D`` channels per head.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

SpatialShapes = Sequence[Tuple[int, int]]
_BILINEAR, _ZEROS = 0, 0  # grid_sampler's interpolation_mode / padding_mode codes


def _sample(level_value: torch.Tensor, level_grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [B*M, D, Nq, P] of one level, zeros outside, pixel edges at -1 / 1."""
    return F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _level_inputs(value, spatial_shapes, sampling_locations, attention_weights):
    """Per level: value map [B*M, D, H, W], grid [B*M, Nq, P, 2] in [-1, 1], weights [B*M, 1, Nq, P]."""
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2.0 * sampling_locations - 1.0  # grid_sample wants [-1, 1]
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, num_queries, num_levels, num_points)
    for level, (h, w) in enumerate(spatial_shapes):
        level_value = values[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        yield level_value, level_grid, weights[..., level, :]


def grid_sample_attention(value: torch.Tensor, spatial_shapes: SpatialShapes, sampling_locations: torch.Tensor,
                          attention_weights: torch.Tensor) -> torch.Tensor:
    """The sampling core, differentiable by plain autograd (which keeps every sample for backward): value
    [B, Nv, M, D], locations [B, Nq, M, L, P, 2], weights [B, Nq, M, L, P] -> [B, Nq, M * D], as
    ``ms_deform_attn.multi_scale_deformable_attention`` documents."""
    batch, _, heads, head_dim = value.shape
    num_queries = sampling_locations.shape[1]
    output = 0
    for level_value, level_grid, level_weights in _level_inputs(value, spatial_shapes, sampling_locations,
                                                                attention_weights):
        sampled = _sample(level_value, level_grid)  # [B*M, D, Nq, P]
        # accumulate level by level: the peak memory stays one level's samples
        if torch.is_grad_enabled() and (sampled.requires_grad or level_weights.requires_grad):
            output = output + (sampled * level_weights).sum(-1)  # [B*M, D, Nq]
        else:  # not recorded (GridSampleDeformableAttention.forward): no second sample-sized buffer
            output = output + sampled.mul_(level_weights).sum(-1)
    return output.view(batch, heads * head_dim, num_queries).transpose(1, 2).contiguous()


class GridSampleDeformableAttention(torch.autograd.Function):
    """``grid_sample_attention`` whose backward recomputes the samples (same arguments and result)."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, sampling_locations, attention_weights):
        """value [B, Nv, M, D], locations [B, Nq, M, L, P, 2], weights [B, Nq, M, L, P] -> [B, Nq, M * D];
        keeps only the inputs for backward, not the [B*M, D, Nq, P] samples of every level."""
        ctx.spatial_shapes = spatial_shapes
        ctx.save_for_backward(value, sampling_locations, attention_weights)
        return grid_sample_attention(value, spatial_shapes, sampling_locations, attention_weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        """grad_output [B, Nq, M*D] -> grads of value, locations and weights, one level at a time."""
        value, locations, weights = ctx.saved_tensors
        batch, _, heads, head_dim = value.shape
        num_queries = locations.shape[1]
        # [B, Nq, M*D] -> [B*M, D, Nq, 1], the layout of one level's samples
        grad_out = grad_output.reshape(batch, num_queries, heads, head_dim).permute(0, 2, 3, 1)
        grad_out = grad_out.reshape(batch * heads, head_dim, num_queries, 1)
        want_value, _, want_locations, want_weights = ctx.needs_input_grad
        grad_values, grad_grids, grad_weights = [], [], []
        for level_value, level_grid, level_weights in _level_inputs(value, ctx.spatial_shapes, locations, weights):
            buffer = None  # one sample-sized buffer per level, reused (in place is measurably faster on CPUs)
            if want_weights:  # d out / d weight = the sample itself: sample again
                buffer = _sample(level_value, level_grid)
                grad_weights.append(buffer.mul_(grad_out).sum(1))  # [B*M, Nq, P]
            if want_value or want_locations:
                grad_sampled = torch.mul(grad_out, level_weights, out=buffer)  # [B*M, D, Nq, P]
                grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                    grad_sampled, level_value, level_grid, _BILINEAR, _ZEROS, False,
                    [bool(want_value), bool(want_locations)])
                grad_values.append(grad_input)
                grad_grids.append(grad_grid)
        grad_value = grad_locations = grad_attention = None
        if want_value:  # [B*M, D, H, W] per level -> [B, Nv, M, D]
            grad_value = torch.cat([g.flatten(2) for g in grad_values], 2)
            grad_value = grad_value.view(batch, heads, head_dim, -1).permute(0, 3, 1, 2).contiguous()
        if want_locations:  # [B*M, Nq, P, 2] per level -> [B, Nq, M, L, P, 2]; d grid / d location = 2
            grad_locations = torch.stack(grad_grids, 2).view(batch, heads, num_queries, -1, *grad_grids[0].shape[-2:])
            grad_locations = 2.0 * grad_locations.transpose(1, 2)
        if want_weights:  # [B*M, Nq, P] per level -> [B, Nq, M, L, P]
            grad_attention = torch.stack(grad_weights, 2).view(batch, heads, num_queries, -1, grad_weights[0].shape[-1])
            grad_attention = grad_attention.transpose(1, 2)
        return grad_value, None, grad_locations, grad_attention
