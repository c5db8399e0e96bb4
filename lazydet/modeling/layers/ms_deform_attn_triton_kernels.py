"""Triton kernels of multi-scale deformable attention: forward and a backward that recomputes the bilinear
corner weights (nothing per sampled point is stored between the two).

Imported lazily by ``ms_deform_attn_triton`` (it needs triton). Under ``TRITON_INTERPRET=1`` (set before
Python starts) the kernels run on CPU tensors through Triton's interpreter.

One program per (image, block of ``BLOCK_Q`` queries, head). It loops over levels and points and, for each
of the 4 bilinear corners, gathers a ``[BLOCK_Q, BLOCK_D]`` tile of value rows (vectorised over the head's
channels), accumulating in fp32 for fp32 / bf16 / fp16 inputs (fp64 for fp64 ones, so gradcheck can run). The backward pass, with the same layout, computes
the gradients of the sampling locations and attention weights from the same gathered rows and scatters the
value gradient with fp32 atomic adds.

Layouts (all contiguous): value [B, Nv, M, D]; sampling locations [B, Nq, M, L, P, 2] (x, y in [0, 1] of
the level's map, pixel edges, as ``grid_sample(align_corners=False)``); attention weights [B, Nq, M, L, P];
output [B, Nq, M, D]; ``shapes`` int32 [L, 2] = (H, W) and ``starts`` int32 [L] (first token of each level).
"""
import triton
import triton.language as tl


@triton.jit
def _tile(num_query, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr,
          BLOCK_D: tl.constexpr):
    """This program's image, head and queries: their rows in the [B, Nq, M] layout, and the masks of the
    real queries [BLOCK_Q] and channels [BLOCK_D]."""
    query_blocks = tl.cdiv(num_query, BLOCK_Q)
    batch = (tl.program_id(0) // query_blocks).to(tl.int64)
    queries = (tl.program_id(0) % query_blocks) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    head = tl.program_id(1)
    channels = tl.arange(0, BLOCK_D)
    query_rows = (batch * num_query + queries) * NUM_HEADS + head
    return batch, head, query_rows, queries < num_query, channels, channels < HEAD_DIM


@triton.jit
def _corner(px, py, height, width, start, batch, num_value, head, query_mask, channels, channel_mask,
            NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, DX: tl.constexpr, DY: tl.constexpr):
    """One bilinear corner of the pixel coordinates (px, py) ([BLOCK_Q], pixel centres at integers): offsets
    of its value rows [BLOCK_Q, BLOCK_D] in the [B, Nv, M, D] layout, their mask (real query and channel,
    corner inside the map) and the corner's x and y weights [BLOCK_Q]."""
    x0 = tl.floor(px)
    y0 = tl.floor(py)
    xi = x0.to(tl.int32) + DX
    yi = y0.to(tl.int32) + DY
    fx = px - x0
    fy = py - y0
    wx = fx if DX == 1 else 1.0 - fx
    wy = fy if DY == 1 else 1.0 - fy
    inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
    rows = ((batch * num_value + start + yi * width + xi) * NUM_HEADS + head) * HEAD_DIM
    mask = (query_mask & inside)[:, None] & channel_mask[None, :]
    return rows[:, None] + channels[None, :], mask, wx, wy


@triton.jit
def _point(loc_ptr, attn_ptr, shapes_ptr, starts_ptr, point_index, query_mask, level, FP64: tl.constexpr):
    """Loads one sampling point per query: pixel coordinates, attention weight (in the accumulation
    dtype: fp64 for fp64 inputs, else fp32), level size and start."""
    acc_dtype = tl.float64 if FP64 else tl.float32
    height = tl.load(shapes_ptr + 2 * level)
    width = tl.load(shapes_ptr + 2 * level + 1)
    start = tl.load(starts_ptr + level)
    x = tl.load(loc_ptr + 2 * point_index, mask=query_mask, other=0.0).to(acc_dtype)
    y = tl.load(loc_ptr + 2 * point_index + 1, mask=query_mask, other=0.0).to(acc_dtype)
    attn = tl.load(attn_ptr + point_index, mask=query_mask, other=0.0).to(acc_dtype)
    # align_corners=False: 0 and 1 are the outer edges of the border pixels
    return x * width - 0.5, y * height - 0.5, attn, height, width, start


@triton.jit
def ms_deform_attn_fwd(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                       num_value, num_query,
                       NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_LEVELS: tl.constexpr,
                       NUM_POINTS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
                       FP64: tl.constexpr):
    """out[b, q, m, :] = sum over levels, points and corners of attn * corner weight * value[b, row, m, :]."""
    batch, head, query_rows, query_mask, channels, channel_mask = _tile(num_query, NUM_HEADS, HEAD_DIM,
                                                                        BLOCK_Q, BLOCK_D)
    acc_dtype = tl.float64 if FP64 else tl.float32
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=acc_dtype)
    first_point = query_rows * (NUM_LEVELS * NUM_POINTS)  # (b, q, m, level 0, point 0) in [B, Nq, M, L, P]
    for level in range(NUM_LEVELS):
        for p in range(NUM_POINTS):
            point_index = first_point + level * NUM_POINTS + p
            px, py, attn, height, width, start = _point(loc_ptr, attn_ptr, shapes_ptr, starts_ptr,
                                                        point_index, query_mask, level, FP64)
            for corner in tl.static_range(4):
                rows, mask, wx, wy = _corner(px, py, height, width, start, batch, num_value, head, query_mask,
                                             channels, channel_mask, NUM_HEADS, HEAD_DIM, corner % 2, corner // 2)
                v = tl.load(value_ptr + rows, mask=mask, other=0.0)
                acc += (attn * wx * wy)[:, None] * v.to(acc_dtype)
    out_rows = query_rows * HEAD_DIM
    out_mask = query_mask[:, None] & channel_mask[None, :]
    tl.store(out_ptr + out_rows[:, None] + channels[None, :], acc.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def ms_deform_attn_bwd(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
                       grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
                       num_value, num_query,
                       NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_LEVELS: tl.constexpr,
                       NUM_POINTS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
                       FP64: tl.constexpr):
    """All three gradients in one pass. grad_value (accumulation dtype, zero-initialised) receives atomic
    adds; grad_loc / grad_attn (accumulation dtype, the inputs' layouts) are written once per point."""
    batch, head, query_rows, query_mask, channels, channel_mask = _tile(num_query, NUM_HEADS, HEAD_DIM,
                                                                        BLOCK_Q, BLOCK_D)
    out_rows = query_rows * HEAD_DIM
    out_mask = query_mask[:, None] & channel_mask[None, :]
    grad_out = tl.load(grad_out_ptr + out_rows[:, None] + channels[None, :], mask=out_mask, other=0.0)
    acc_dtype = tl.float64 if FP64 else tl.float32
    grad_out = grad_out.to(acc_dtype)
    first_point = query_rows * (NUM_LEVELS * NUM_POINTS)
    for level in range(NUM_LEVELS):
        for p in range(NUM_POINTS):
            point_index = first_point + level * NUM_POINTS + p
            px, py, attn, height, width, start = _point(loc_ptr, attn_ptr, shapes_ptr, starts_ptr,
                                                        point_index, query_mask, level, FP64)
            grad_attn = tl.zeros((BLOCK_Q,), dtype=acc_dtype)
            grad_px = tl.zeros((BLOCK_Q,), dtype=acc_dtype)
            grad_py = tl.zeros((BLOCK_Q,), dtype=acc_dtype)
            for corner in tl.static_range(4):
                rows, mask, wx, wy = _corner(px, py, height, width, start, batch, num_value, head, query_mask,
                                             channels, channel_mask, NUM_HEADS, HEAD_DIM, corner % 2, corner // 2)
                v = tl.load(value_ptr + rows, mask=mask, other=0.0)
                dot = tl.sum(v.to(acc_dtype) * grad_out, axis=1)  # d out / d (corner sample), per query
                grad_attn += wx * wy * dot
                # d wx / d px is +1 for the right corner, -1 for the left one; same for y
                grad_px += (1.0 if corner % 2 == 1 else -1.0) * wy * dot
                grad_py += (1.0 if corner // 2 == 1 else -1.0) * wx * dot
                tl.atomic_add(grad_value_ptr + rows,
                              (attn * wx * wy)[:, None] * grad_out, mask=mask)
            tl.store(grad_attn_ptr + point_index, grad_attn, mask=query_mask)
            # px = x * W - 0.5, so d/dx = W d/dpx
            tl.store(grad_loc_ptr + 2 * point_index, attn * grad_px * width, mask=query_mask)
            tl.store(grad_loc_ptr + 2 * point_index + 1, attn * grad_py * height, mask=query_mask)
