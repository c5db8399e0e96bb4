"""The Triton kernel of multi-scale deformable attention on the CPU, through Triton's interpreter:
forward and the three gradients vs the PyTorch path, low-precision inputs, float64 gradcheck, a whole tiny
DINO; and the compiled (sm_90) build of both kernels.

Triton reads TRITON_INTERPRET when it is first imported, so the interpreted tests run in a child pytest
started with it set (`test_interpreted_cases_in_a_child_process`); in a process without it they skip. The
interpreter runs one Python loop per program, level and point, so the cases are tiny."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from lazydet.modeling.dino import DINO, DINOCriterion, DINOTransformer, DINOTransformerDecoder, DINOTransformerEncoder
from lazydet.modeling.dino import HungarianMatcher
from lazydet.modeling.layers import MultiScaleDeformableAttention, multi_scale_deformable_attention
from test_dino_model import StandInBackbone

triton = pytest.importorskip("triton")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture
def interpreter():
    if not INTERPRETED:
        pytest.skip("interpreted: runs in the child process of test_interpreted_cases_in_a_child_process")


@pytest.mark.skipif(INTERPRETED, reason="this is the child process")
def test_interpreted_cases_in_a_child_process():
    env = dict(os.environ, TRITON_INTERPRET="1")
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
                            "-k", "not child_process and not compile and not cuda", __file__],
                           env=env, capture_output=True, text=True, timeout=900)
    print(child.stdout)
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-2000:]
    summary = [line for line in child.stdout.splitlines() if " passed" in line][-1]
    assert "skipped" not in summary and "deselected" in summary, child.stdout[-2000:]


def random_case(shapes, batch, nq, heads, dim, points, seed=0, padding=True):
    """fp32 value (padding tokens zeroed, as the module does), locations partly outside the map, softmax-ed
    weights, and an output gradient."""
    g = torch.Generator().manual_seed(seed)
    num_value = sum(h * w for h, w in shapes)
    value = torch.randn(batch, num_value, heads, dim, generator=g)
    if padding:  # the last column of every level of image 0 is padding
        first = 0
        for h, w in shapes:
            value[0, first + w - 1:first + h * w:w] = 0.0
            first += h * w
    locations = torch.rand(batch, nq, heads, len(shapes), points, 2, generator=g) * 1.5 - 0.25
    weights = torch.rand(batch, nq, heads, len(shapes) * points, generator=g).softmax(-1)
    weights = weights.view(batch, nq, heads, len(shapes), points)
    grad_out = torch.randn(batch, nq, heads * dim, generator=g)
    return value, locations, weights, grad_out


def output_and_grads(impl, shapes, value, locations, weights, grad_out):
    inputs = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = multi_scale_deformable_attention(inputs[0], shapes, inputs[1], inputs[2], impl=impl)
    return (out, *torch.autograd.grad(out, inputs, grad_out.to(out.dtype)))


CASES = {  # shapes, batch, queries, heads, head dim, points
    "4 non-square levels, 2 heads, D=32": ([(5, 7), (3, 4), (2, 3), (1, 2)], 2, 6, 2, 32, 1),
    "1 level, 3 heads, D=64, 2 query blocks": ([(4, 6)], 1, 70, 3, 64, 2),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_kernel_matches_pytorch_path_fp32(interpreter, case):
    shapes, *sizes = CASES[case]
    tensors = random_case(shapes, *sizes)
    kernel = output_and_grads("triton", shapes, *tensors)
    reference = output_and_grads("pytorch", shapes, *tensors)
    for name, a, b in zip(("output", "grad value", "grad locations", "grad weights"), kernel, reference):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"{case}, {name}: {m}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_low_precision_inputs_vs_fp32(interpreter, dtype):
    shapes = [(4, 5), (2, 3)]
    tensors = random_case(shapes, 1, 8, 2, 32, 2, seed=1)
    rounded = [t.to(dtype) for t in tensors]
    kernel = output_and_grads("triton", shapes, *rounded)
    # reference: the same rounded inputs, computed in fp32
    reference = output_and_grads("pytorch", shapes, *[t.float() for t in rounded])
    assert [t.dtype for t in kernel] == [dtype] * 4
    tolerance = 2e-2 if dtype == torch.bfloat16 else 4e-3  # one rounding of the fp32 result
    for a, b in zip(kernel, reference):
        torch.testing.assert_close(a.float(), b, atol=tolerance * b.abs().max().item(), rtol=tolerance)


def test_kernel_gradcheck_float64(interpreter):
    shapes = [(2, 3), (1, 2)]
    value, locations, weights, _ = random_case(shapes, 1, 2, 1, 2, 1, seed=2, padding=False)
    inputs = [t.double().requires_grad_() for t in (value, locations, weights)]
    assert torch.autograd.gradcheck(
        lambda v, l, w: multi_scale_deformable_attention(v, shapes, l, w, impl="triton"), inputs, fast_mode=True)


def tiny_dino_losses_and_grads(impl):
    """One training forward + backward of a 1+1-layer, 2-head, 1-point DINO on two padded images."""
    torch.manual_seed(0)
    encoder = DINOTransformerEncoder(16, 2, 32, 0.0, 1, 2, 1, impl=impl)
    decoder = DINOTransformerDecoder(16, 2, 32, 0.0, 1, 2, 1, impl=impl)
    model = DINO(StandInBackbone(channels=8, num_levels=2), DINOTransformer(encoder, decoder, 2),
                 DINOCriterion(3, HungarianMatcher()),
                 embed_dim=16, num_classes=3, num_queries=8, dn_number=2)
    for m in model.modules():  # spread the sampling points and weights away from their init
        if isinstance(m, MultiScaleDeformableAttention):
            nn.init.normal_(m.sampling_offsets.weight, std=0.3)
            nn.init.normal_(m.attention_weights.weight, std=0.3)
    images = torch.randint(0, 255, (2, 3, 32, 48), dtype=torch.uint8)
    mask = torch.zeros(2, 32, 48, dtype=torch.bool)
    mask[0], mask[1, :24, :32] = True, True
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.6, 0.6, 0.4, 0.3]])},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.4]])}]
    losses = model.train()({"images": images, "pixel_mask": mask, "targets": targets})
    sum(losses.values()).backward()
    return losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_tiny_dino_same_losses_and_gradients_with_either_core(interpreter):
    losses_t, grads_t = tiny_dino_losses_and_grads("triton")
    losses_p, grads_p = tiny_dino_losses_and_grads("pytorch")
    assert losses_t.keys() == losses_p.keys() and grads_t.keys() == grads_p.keys()
    for name in losses_p:
        torch.testing.assert_close(losses_t[name], losses_p[name], atol=1e-5, rtol=1e-5, msg=name)
    assert any("sampling_offsets" in n and g.abs().sum() > 0 for n, g in grads_p.items())
    for name in grads_p:
        torch.testing.assert_close(grads_t[name], grads_p[name], atol=1e-5, rtol=1e-4, msg=name)


def test_kernels_compile_for_a_gpu():
    """The compiled mode is stricter than the interpreter: build both kernels for sm_90 (ptx + cubin through
    the ptxas that ships with Triton; no GPU needed), bf16 values as in AMP training."""
    if INTERPRETED:
        pytest.skip("the kernels are interpreted in this process")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        from lazydet.modeling.layers import ms_deform_attn_triton_kernels as kernels
    except Exception as e:  # noqa: BLE001 - a triton without the CUDA backend
        pytest.skip(f"no Triton CUDA backend: {e}")
    meta = dict(NUM_HEADS=8, HEAD_DIM=32, NUM_LEVELS=4, NUM_POINTS=4, BLOCK_Q=64, BLOCK_D=32, FP64=False)
    tables = {"value_ptr": "*bf16", "shapes_ptr": "*i32", "starts_ptr": "*i32", "loc_ptr": "*fp32",
              "attn_ptr": "*fp32"}
    sizes = {"num_value": "i32", "num_query": "i32", **{k: "constexpr" for k in meta}}
    forward = {**tables, "out_ptr": "*bf16", **sizes}
    backward = {**tables, "grad_out_ptr": "*bf16", "grad_value_ptr": "*fp32", "grad_loc_ptr": "*fp32",
                "grad_attn_ptr": "*fp32", **sizes}
    for kernel, signature in ((kernels.ms_deform_attn_fwd, forward), (kernels.ms_deform_attn_bwd, backward)):
        compiled = triton.compile(ASTSource(kernel, signature, meta), target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"] and ".entry " + kernel.__name__ in compiled.asm["ptx"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRETED, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_pytorch_path_on_cuda(dtype):
    """COCO-like layer (4 levels, 8 heads x 32, 4 points, 300 queries) on the GPU, compiled kernel."""
    shapes = [(40, 56), (20, 28), (10, 14), (5, 7)]
    tensors = [t.cuda() for t in random_case(shapes, 2, 300, 8, 32, 4, seed=3)]
    kernel = output_and_grads("triton", shapes, *[t.to(dtype) for t in tensors])
    reference = output_and_grads("pytorch", shapes, *[t.to(dtype).float() for t in tensors])
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    for a, b in zip(kernel, reference):
        torch.testing.assert_close(a.float(), b, atol=tolerance * max(1.0, b.abs().max().item()), rtol=tolerance)
