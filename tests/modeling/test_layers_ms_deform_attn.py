"""Multi-scale deformable attention vs a direct per-point bilinear computation; padding / valid ratios; the
recomputing backward of the PyTorch path vs plain autograd; choosing the core (the Triton kernel itself:
test_layers_ms_deform_attn_triton.py)."""
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from lazydet.modeling.dino import DINOTransformerDecoder, DINOTransformerEncoder
from lazydet.modeling.layers import MultiScaleDeformableAttention, multi_scale_deformable_attention
from lazydet.modeling.layers import ms_deform_attn
from lazydet.modeling.layers.ms_deform_attn_pytorch import GridSampleDeformableAttention, grid_sample_attention


def bilinear_reference(value_map, x, y):
    """value_map [D, H, W]; (x, y) in [0, 1] of the map (pixel edges) -> [D]; zeros outside."""
    _, h, w = value_map.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(value_map.shape[0], dtype=torch.float64)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < w and 0 <= yi < h:
            out += weight * value_map[:, yi, xi].double()
    return out


def direct_attention(value, shapes, locations, weights):
    """Loops over every image, query, head, level and point."""
    batch, _, heads, dim = value.shape
    _, nq, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, nq, heads * dim, dtype=torch.float64)
    for b in range(batch):
        for q in range(nq):
            for m in range(heads):
                acc = torch.zeros(dim, dtype=torch.float64)
                for lvl, (h, w) in enumerate(shapes):
                    level_map = value[b, starts[lvl]:starts[lvl + 1], m].T.reshape(dim, h, w)
                    for p in range(points):
                        x, y = locations[b, q, m, lvl, p].tolist()
                        acc += weights[b, q, m, lvl, p].item() * bilinear_reference(level_map, x, y)
                out[b, q, m * dim:(m + 1) * dim] = acc
    return out


def test_core_matches_direct_bilinear_sampling():
    torch.manual_seed(0)
    shapes = [(6, 7), (3, 4), (2, 2)]
    batch, nq, heads, dim, points = 2, 5, 2, 3, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim)
    # include locations outside [0, 1] to exercise the zero padding
    locations = torch.rand(batch, nq, heads, len(shapes), points, 2) * 1.4 - 0.2
    weights = torch.rand(batch, nq, heads, len(shapes), points)
    fast = multi_scale_deformable_attention(value, shapes, locations, weights)
    slow = direct_attention(value, shapes, locations, weights)
    torch.testing.assert_close(fast.double(), slow, atol=1e-5, rtol=1e-5)


def test_padded_image_attends_like_the_unpadded_one():
    """Valid ratios + zeroed padding tokens: a padded copy gives the unpadded image's output."""
    torch.manual_seed(1)
    embed, levels = 16, 2
    attn = MultiScaleDeformableAttention(embed, num_heads=2, num_levels=levels, num_points=3)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.5)  # spread the points
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.5)
    real_shapes, padded_shapes = [(4, 6), (2, 3)], [(6, 8), (3, 4)]
    feats = [torch.randn(1, embed, h, w) for h, w in real_shapes]
    padded, valid = [], []
    for f, (h, w) in zip(feats, padded_shapes):
        canvas = torch.randn(1, embed, h, w) * 100.0  # garbage on padding must not leak in
        canvas[:, :, :f.shape[2], :f.shape[3]] = f
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        mask[:, :f.shape[2], :f.shape[3]] = True
        padded.append(canvas)
        valid.append(mask)
    flat = lambda maps: torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
    query = torch.randn(1, 7, embed)
    ref = torch.rand(1, 7, 2) * 0.8 + 0.1  # normalised to the real image
    ratios = torch.tensor([[rw / pw, rh / ph] for (rh, rw), (ph, pw) in zip(real_shapes, padded_shapes)])

    out_real = attn(query, ref[:, :, None].expand(-1, -1, levels, -1), flat(feats), real_shapes)
    out_padded = attn(query, ref[:, :, None] * ratios[None, None], flat(padded), padded_shapes,
                      value_valid=torch.cat([v.flatten(1) for v in valid], 1))
    torch.testing.assert_close(out_padded, out_real, atol=1e-5, rtol=1e-4)

    boxes = torch.cat([ref, torch.rand(1, 7, 2) * 0.3 + 0.05], -1)  # 4D reference boxes
    ratios4 = torch.cat([ratios, ratios], -1)
    out_real = attn(query, boxes[:, :, None].expand(-1, -1, levels, -1), flat(feats), real_shapes)
    out_padded = attn(query, boxes[:, :, None] * ratios4[None, None], flat(padded), padded_shapes,
                      value_valid=torch.cat([v.flatten(1) for v in valid], 1))
    torch.testing.assert_close(out_padded, out_real, atol=1e-5, rtol=1e-4)


def test_sampling_runs_in_fp32_under_autocast(monkeypatch):
    seen = []
    real_grid_sample = F.grid_sample

    def spy(inp, grid, **kw):
        seen.append((inp.dtype, grid.dtype))
        return real_grid_sample(inp, grid, **kw)

    monkeypatch.setattr(F, "grid_sample", spy)
    attn = MultiScaleDeformableAttention(16, num_heads=2, num_levels=1, num_points=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(torch.randn(1, 3, 16), torch.rand(1, 3, 1, 2), torch.randn(1, 12, 16), [(3, 4)])
    assert seen and all(d == (torch.float32, torch.float32) for d in seen)
    assert torch.isfinite(out).all()


def test_bad_reference_shape_is_a_clear_error():
    attn = MultiScaleDeformableAttention(16, num_heads=2, num_levels=1, num_points=2)
    with pytest.raises(ValueError, match="reference_points"):
        attn(torch.randn(1, 3, 16), torch.rand(1, 3, 1, 3), torch.randn(1, 12, 16), [(3, 4)])


def random_inputs(shapes, batch=2, nq=5, heads=2, dim=3, points=3, dtype=torch.float32, seed=0):
    """value / locations (some outside [0, 1]) / softmax-ed weights, all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim, generator=g, dtype=dtype)
    locations = torch.rand(batch, nq, heads, len(shapes), points, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(batch, nq, heads, len(shapes), points, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (value, locations, weights)]


def test_recomputing_backward_matches_plain_autograd():
    shapes = [(6, 7), (3, 4), (2, 2)]
    inputs = random_inputs(shapes)
    grad_out = torch.randn(2, 5, 2 * 3)
    plain = grid_sample_attention(inputs[0], shapes, *inputs[1:])
    recomputed = multi_scale_deformable_attention(inputs[0], shapes, *inputs[1:], impl="pytorch")
    torch.testing.assert_close(recomputed, plain, atol=0, rtol=0)
    for a, b in zip(torch.autograd.grad(recomputed, inputs, grad_out), torch.autograd.grad(plain, inputs, grad_out)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_no_grad_and_tracing_take_the_plain_ops_with_the_same_result():
    """Without a backward (no_grad, or a jit trace such as fvcore's FLOP count, which cannot record the
    autograd Function) the core runs the plain grid_sample ops: same values, and the trace holds grid_sample."""
    shapes = [(6, 7), (3, 4)]
    value, locations, weights = (t.detach() for t in random_inputs(shapes))
    expected = direct_attention(value, shapes, locations, weights)
    with torch.no_grad():
        torch.testing.assert_close(multi_scale_deformable_attention(value, shapes, locations, weights).double(),
                                   expected, atol=1e-5, rtol=1e-5)
    traced = torch.jit.trace(lambda v, l, w: multi_scale_deformable_attention(v, shapes, l, w),
                             (value, locations, weights), check_trace=False)
    assert "aten::grid_sampler" in str(traced.graph)
    torch.testing.assert_close(traced(value, locations, weights).double(), expected, atol=1e-5, rtol=1e-5)


def test_recomputing_backward_gradcheck_float64():
    shapes = [(3, 4), (2, 1)]
    inputs = random_inputs(shapes, batch=1, nq=2, heads=2, dim=2, points=2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v, l, w: GridSampleDeformableAttention.apply(v, shapes, l, w), inputs)


def saved_numel(fn):
    """Elements of the tensors autograd saves for backward while `fn()` runs."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes)


def test_recomputing_backward_keeps_only_its_inputs():
    shapes = [(8, 8), (4, 4)]
    inputs = random_inputs(shapes, nq=40, heads=2, dim=8, points=4)
    per_point_samples = 2 * 40 * 2 * 2 * 4 * 8  # B x Nq x M x L x P x D
    plain = saved_numel(lambda: grid_sample_attention(inputs[0], shapes, *inputs[1:]))
    recomputed = saved_numel(lambda: GridSampleDeformableAttention.apply(inputs[0], shapes, *inputs[1:]))
    assert plain >= per_point_samples
    assert recomputed == sum(t.numel() for t in inputs)


def test_unknown_impl_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^multi-scale deformable attention: impl='cuda' is not one of "
                                         r"auto, pytorch, triton$"):
        MultiScaleDeformableAttention(16, num_heads=2, num_levels=1, num_points=2, impl="cuda")


def test_triton_without_cuda_or_interpreter_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    value, locations, weights = random_inputs([(3, 4)])
    with pytest.raises(RuntimeError) as err:
        multi_scale_deformable_attention(value, [(3, 4)], locations, weights, impl="triton")
    message = str(err.value)
    assert "\n" not in message and "impl='triton'" in message
    assert ("TRITON_INTERPRET=1" in message and "got cpu tensors" in message) or "triton package" in message


def test_auto_runs_the_pytorch_path_on_cpu_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setattr(ms_deform_attn, "_announced", set())
    caplog.set_level(logging.INFO, logger=ms_deform_attn.__name__)
    ran = []
    real = GridSampleDeformableAttention.apply
    monkeypatch.setattr(GridSampleDeformableAttention, "apply", lambda *a: ran.append(1) or real(*a))
    attn = MultiScaleDeformableAttention(16, num_heads=2, num_levels=1, num_points=2)
    for _ in range(3):
        attn(torch.randn(1, 3, 16), torch.rand(1, 3, 1, 2), torch.randn(1, 12, 16), [(3, 4)])
    assert len(ran) == 3
    lines = [r.getMessage() for r in caplog.records if "deformable attention" in r.getMessage()]
    assert lines == ["multi-scale deformable attention: pytorch core on cpu (impl='auto')"]


def test_encoder_and_decoder_pass_impl_to_every_layer():
    encoder = DINOTransformerEncoder(16, 2, 32, 0.0, 2, 2, 2, impl="triton")
    decoder = DINOTransformerDecoder(16, 2, 32, 0.0, 3, 2, 2, impl="pytorch")
    cores = [m.impl for m in (*encoder.modules(), *decoder.modules()) if isinstance(m, MultiScaleDeformableAttention)]
    assert cores == ["triton"] * 2 + ["pytorch"] * 3
