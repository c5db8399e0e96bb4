"""Part 1 of the GPU report: multi-scale deformable attention, Triton kernel vs PyTorch path, at a recipe's shapes.

Shapes come from the recipe, not from constants: the feature levels from running its backbone on the
meta device (no memory, no arithmetic) at the report's image size, heads / points / head dim from its
encoder, decoder queries = `num_queries + 2 * dn_number` (DINO's matching queries plus at most that many
denoising queries), encoder queries = every value token. For each case x dtype x implementation: median
forward+backward time (CUDA synchronised) and the peak CUDA memory the call adds on top of its inputs;
then each implementation's output and three gradients against the PyTorch path in fp32 (max abs diff).

The functional is `lazydet.modeling.layers.multi_scale_deformable_attention(value, spatial_shapes,
sampling_locations, attention_weights, impl=...)`; the PyTorch path is called without `impl` (its default).
A missing implementation or argument is a row `failed: <reason>`, never a crash of the part.
"""
from __future__ import annotations

import copy
import importlib
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from lazydet.config import instantiate
from lazydet.utils import resolve_device

from .part_runner import PartRows, one_line
from .timing import PRECISIONS, load_recipe, synchronize

Shapes = List[Tuple[int, int]]
GRAD_NAMES = ("value", "sampling_locations", "attention_weights")
# main's path before the kernel (plain autograd through grid_sample: keeps every sample for backward), which the
# kernel's branch keeps as grid_sample_attention; timed as a second baseline where it exists
IMPL_PATHS = {"autograd": "lazydet.modeling.layers.ms_deform_attn_pytorch:grid_sample_attention"}
BASELINES = ("pytorch", "autograd")


def level_shapes(cfg, batch_size: int, height: int, width: int) -> Shapes:
    """(H_l, W_l) of each feature level the recipe's backbone makes from `batch_size` images of height x width
    (shapes only: no weights are loaded, nothing is allocated)."""
    spec = copy.deepcopy(cfg.model.backbone)
    if "pretrained" in spec.get("net", {}):
        spec.net.pretrained = False
    with torch.device("meta"):
        backbone = instantiate(spec)
        features, _ = backbone(torch.empty(batch_size, 3, height, width))
    return [tuple(int(s) for s in f.shape[-2:]) for f in features]


def attention_sizes(cfg) -> Dict[str, int]:
    """heads, points and channels per head of the recipe's encoder; decoder query count."""
    enc, model = cfg.model.transformer.encoder, cfg.model
    return {"heads": int(enc.num_heads), "points": int(enc.num_points),
            "head_dim": int(model.embed_dim) // int(enc.num_heads),
            "decoder_queries": int(model.num_queries) + 2 * int(model.get("dn_number", 0) or 0)}


def make_inputs(batch: int, shapes: Shapes, num_queries: int, heads: int, points: int, head_dim: int,
                device, seed: int = 0) -> Dict[str, torch.Tensor]:
    """fp32 inputs: value [B, Nv, M, D], sampling_locations [B, Nq, M, L, P, 2] in [-0.1, 1.1] (some outside the
    map), attention_weights [B, Nq, M, L, P] softmax-ed over L*P, grad_output [B, Nq, M*D]."""
    gen = torch.Generator().manual_seed(seed)
    levels, tokens = len(shapes), sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, heads, head_dim, generator=gen)
    locations = torch.rand(batch, num_queries, heads, levels, points, 2, generator=gen) * 1.2 - 0.1
    logits = torch.randn(batch, num_queries, heads, levels * points, generator=gen)
    weights = logits.softmax(-1).view(batch, num_queries, heads, levels, points)
    grad_out = torch.randn(batch, num_queries, heads * head_dim, generator=gen)
    return {k: v.to(device) for k, v in (("value", value), ("sampling_locations", locations),
                                          ("attention_weights", weights), ("grad_output", grad_out))}


def sampler(impl: str) -> Callable:
    """fn(value, shapes, locations, weights) of one implementation ("pytorch" uses the functional's default)."""
    from lazydet.modeling.layers import multi_scale_deformable_attention as msda

    if impl == "pytorch":
        return msda
    if impl in IMPL_PATHS:
        module, _, name = IMPL_PATHS[impl].partition(":")
        return getattr(importlib.import_module(module), name)
    return lambda *args: msda(*args, impl=impl)


def forward_backward(fn: Callable, shapes: Shapes, inputs: Dict[str, torch.Tensor], dtype: torch.dtype):
    """One forward+backward in `dtype`; returns (output, {grad name: gradient}), both in fp32."""
    leaves = {k: inputs[k].detach().to(dtype).requires_grad_(True) for k in GRAD_NAMES}
    out = fn(leaves["value"], shapes, leaves["sampling_locations"], leaves["attention_weights"])
    out.backward(inputs["grad_output"].to(out.dtype))
    return out.detach().float(), {k: leaves[k].grad.float() for k in GRAD_NAMES}


def time_and_memory(fn: Callable, shapes: Shapes, inputs: Dict[str, torch.Tensor], dtype: torch.dtype,
                    iters: int, warmup: int) -> dict:
    """Median/min/max seconds of forward+backward, and (CUDA) the peak MiB it allocates above its inputs."""
    device = inputs["value"].device
    seconds = []
    for i in range(warmup + iters):
        if device.type == "cuda" and i == warmup:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        synchronize(device)
        t0 = time.perf_counter()
        forward_backward(fn, shapes, inputs, dtype)
        synchronize(device)
        if i >= warmup:
            seconds.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    return {"ms_median": 1e3 * statistics.median(seconds), "ms_min": 1e3 * min(seconds),
            "ms_max": 1e3 * max(seconds), "iters": len(seconds), "peak_mib": peak}


def max_abs_diffs(reference: Tuple, result: Tuple) -> dict:
    """Max |a - b| of the output and each gradient, plus the reference's max |a| for scale."""
    (ref_out, ref_grads), (out, grads) = reference, result
    diffs = {"output": (out - ref_out).abs().max().item(), "output_scale": ref_out.abs().max().item()}
    for k in GRAD_NAMES:
        diffs[f"grad_{k}"] = (grads[k] - ref_grads[k]).abs().max().item()
        diffs[f"grad_{k}_scale"] = ref_grads[k].abs().max().item()
    return diffs


def _unsupported(impl: str, device: torch.device) -> Optional[str]:
    if impl == "triton" and device.type != "cuda":
        return "the Triton kernel is timed on CUDA only (on a CPU it runs under the interpreter, a correctness tool)"
    return None


def measure_row(case: str, impl: str, precision: str, shapes: Shapes, inputs: dict, iters: int, warmup: int) -> dict:
    """One table row: timing + memory of `impl` in `precision`, or status skipped/failed with a one-line reason."""
    row = {"case": case, "impl": impl, "precision": precision, "queries": inputs["sampling_locations"].shape[1],
           "status": "ok", "reason": ""}
    skip = _unsupported(impl, inputs["value"].device)
    if skip:
        return dict(row, status="skipped", reason=skip)
    try:
        row.update(time_and_memory(sampler(impl), shapes, inputs, PRECISIONS[precision] or torch.float32,
                                   iters, warmup))
    except Exception as e:  # noqa: BLE001 - a missing/broken implementation is a table entry
        row.update(status="failed", reason=one_line(e))
    return row


def check_row(case: str, impl: str, precision: str, shapes: Shapes, inputs: dict, reference: Tuple) -> dict:
    """Max abs differences of `impl` in `precision` against the PyTorch path in fp32 on the same inputs."""
    row = {"case": case, "impl": impl, "precision": precision, "status": "ok", "reason": ""}
    skip = _unsupported(impl, inputs["value"].device)
    if skip:
        return dict(row, status="skipped", reason=skip)
    try:
        row.update(max_abs_diffs(reference, forward_backward(sampler(impl), shapes, inputs,
                                                             PRECISIONS[precision] or torch.float32)))
    except Exception as e:  # noqa: BLE001
        row.update(status="failed", reason=one_line(e))
    return row


def run(rows: PartRows, config_file: str, device: str, batch_size: int, image_size: Sequence[int],
        impls: Sequence[str] = ("pytorch", "autograd", "triton"), precisions: Sequence[str] = ("fp32", "bf16"),
        iters: int = 10, warmup: int = 3) -> None:
    """The report part: rows {"kind": "timing"|"check", ...} for the decoder and encoder query counts."""
    cfg = load_recipe(config_file)
    dev = resolve_device(device)
    height, width = image_size
    shapes = level_shapes(cfg, batch_size, height, width)
    sizes = attention_sizes(cfg)
    tokens = sum(h * w for h, w in shapes)
    rows.note(f"{height}x{width} input, batch {batch_size}: levels {shapes} ({tokens} value tokens), "
              f"{sizes['heads']} heads, {sizes['points']} points, head dim {sizes['head_dim']}; decoder "
              f"{sizes['decoder_queries']} queries, encoder {tokens} queries; device {dev}")
    if dev.type == "cuda":
        rows.note(f"GPU: {torch.cuda.get_device_name(dev)}")
    else:
        rows.note("peak memory is measured on CUDA only")
    cases = [("decoder", sizes["decoder_queries"]), ("encoder", tokens)]
    for case, queries in cases:
        inputs = make_inputs(batch_size, shapes, queries, sizes["heads"], sizes["points"], sizes["head_dim"], dev)
        for precision in precisions:
            for impl in impls:
                rows.add(dict(kind="timing", **measure_row(case, impl, precision, shapes, inputs, iters, warmup)))
        reference = forward_backward(sampler("pytorch"), shapes, inputs, torch.float32)
        for precision in precisions:
            for impl in impls:
                if (impl, precision) != ("pytorch", "fp32"):  # the reference itself
                    rows.add(dict(kind="check", **check_row(case, impl, precision, shapes, inputs, reference)))
        del inputs, reference
        if dev.type == "cuda":
            torch.cuda.empty_cache()
