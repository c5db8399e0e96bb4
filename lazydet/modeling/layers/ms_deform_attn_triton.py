"""The Triton path of multi-scale deformable attention: availability check, kernel loading, autograd Function.

Same semantics as the PyTorch path (``ms_deform_attn_pytorch``): bilinear, ``align_corners=False``, zeros
outside the map, levels concatenated fine to coarse. Inputs may be fp32, bf16 or fp16 (each tensor its own);
sums are fp32 (fp64 for fp64 ``value``, for gradcheck), the output has ``value``'s dtype and each gradient
its input's dtype. Backward recomputes the corner weights: only the inputs are saved. Runs on CUDA tensors, or on CPU tensors through Triton's
interpreter when ``TRITON_INTERPRET=1`` is set before Python starts (triton reads it when it is first
imported; slow, for tests). Triton itself is imported lazily, so lazydet imports without it.
"""
import os
from typing import Optional, Sequence, Tuple

import torch

BLOCK_Q = 64  # queries per program; a program holds BLOCK_Q x next_pow2(D) fp32 accumulators


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_unavailable_reason(device: torch.device) -> Optional[str]:
    """None when the Triton path can run on tensors of `device`, else one line saying why not."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return (f"impl='triton' needs the triton package, which failed to import ({e}); "
                "use impl='pytorch' or 'auto'")
    if device.type == "cuda" or (device.type == "cpu" and _interpreting()):
        return None
    return (f"impl='triton' runs on CUDA tensors, or on the CPU only under Triton's interpreter "
            f"(TRITON_INTERPRET=1 before Python starts); got {device.type} tensors without it: "
            "use impl='pytorch' or 'auto'")


def _kernels():
    """The kernels module (imports triton)."""
    from . import ms_deform_attn_triton_kernels

    return ms_deform_attn_triton_kernels


def _launch_args(value: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]], locations: torch.Tensor):
    """Level tables on the device, grid and meta-parameters shared by forward and backward."""
    import triton

    batch, num_value, heads, head_dim = value.shape
    _, num_query, _, levels, points, _ = locations.shape
    shapes = torch.tensor(spatial_shapes, dtype=torch.int32, device=value.device).view(levels, 2)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = (sizes.cumsum(0) - sizes).to(torch.int32)
    grid = (batch * triton.cdiv(num_query, BLOCK_Q), heads)
    meta = dict(NUM_HEADS=heads, HEAD_DIM=head_dim, NUM_LEVELS=levels, NUM_POINTS=points,
                BLOCK_Q=BLOCK_Q, BLOCK_D=triton.next_power_of_2(head_dim), FP64=value.dtype == torch.float64)
    return shapes, starts, grid, (num_value, num_query), meta


class TritonDeformableAttention(torch.autograd.Function):
    """value [B, Nv, M, D], locations [B, Nq, M, L, P, 2], weights [B, Nq, M, L, P] -> [B, Nq, M * D]."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, sampling_locations, attention_weights):
        """One fused kernel launch: value [B, Nv, M, D], locations [B, Nq, M, L, P, 2] (in [0, 1]), weights
        [B, Nq, M, L, P] -> [B, Nq, M * D], in the inputs' dtype; saves the (contiguous) inputs for backward."""
        value, locations, weights = (t.contiguous() for t in (value, sampling_locations, attention_weights))
        shapes, starts, grid, sizes, meta = _launch_args(value, spatial_shapes, locations)
        out = value.new_empty(value.shape[0], locations.shape[1], value.shape[2], value.shape[3])
        _kernels().ms_deform_attn_fwd[grid](
            value, shapes, starts, locations, weights, out, *sizes, **meta)
        ctx.spatial_shapes = spatial_shapes
        ctx.save_for_backward(value, locations, weights)
        return out.flatten(2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        """grad_output [B, Nq, M * D] -> gradients of value, locations and weights (None for the shapes),
        accumulated in fp32 (fp64 for fp64 inputs; value's by atomic adds) and cast back to each input's dtype."""
        value, locations, weights = ctx.saved_tensors
        shapes, starts, grid, sizes, meta = _launch_args(value, ctx.spatial_shapes, locations)
        grad_output = grad_output.contiguous()
        acc_dtype = torch.float64 if meta["FP64"] else torch.float32
        grad_value = torch.zeros(value.shape, dtype=acc_dtype, device=value.device)
        grad_locations = torch.empty(locations.shape, dtype=acc_dtype, device=value.device)
        grad_weights = torch.empty(weights.shape, dtype=acc_dtype, device=value.device)
        _kernels().ms_deform_attn_bwd[grid](
            value, shapes, starts, locations, weights, grad_output,
            grad_value, grad_locations, grad_weights, *sizes, **meta)
        return (grad_value.to(value.dtype), None, grad_locations.to(locations.dtype),
                grad_weights.to(weights.dtype))
