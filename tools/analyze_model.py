"""Parameters per module and inference FLOPs (fvcore) of a recipe's model.

    python -m tools.analyze_model --config-file F [--image-size H W] [--batch-size B] [--depth D] [key=value ...]

The model is built with random weights (`model.backbone.net.pretrained=False`: nothing is downloaded).
FLOPs are counted for one eval-mode forward of `--batch-size` random images of `--image-size` (default: the
size of the first test image when the test set is available, else 800x1216); one fused multiply-add counts
as one flop, as fvcore (and detectron2's published numbers) do. Operators fvcore has no formula for (e.g.
grid_sample in deformable attention) are listed, not counted.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence, Tuple

import torch
from fvcore.nn import FlopCountAnalysis, flop_count_table, parameter_count
from fvcore.nn.jit_handles import get_shape

from lazydet.config import ConfigError, LazyConfig, instantiate

logger = logging.getLogger("lazydet.analyze_model")
DEFAULT_SIZE = (800, 1216)


class _ImagesToDetections(torch.nn.Module):
    """Tensor-in, tensor-out view of a detector for tracing: (images, pixel_mask) -> boxes, scores, labels."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, pixel_mask: torch.Tensor):
        outputs = self.model({"images": images, "pixel_mask": pixel_mask})
        return tuple(t for o in outputs for t in (o["boxes"], o["scores"], o["labels"]))


def sdpa_flop_jit(inputs, outputs) -> int:
    """aten::scaled_dot_product_attention: Q @ K^T and softmax(.) @ V, one multiply-add per term."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    queries = 1
    for d in q[:-1]:
        queries *= d
    return queries * k[-2] * (q[-1] + v[-1])


def _first_test_image_size(cfg) -> Optional[Tuple[int, int]]:
    """(h, w) of the first mapped test image, or None when the test data cannot be read."""
    try:
        dataset = instantiate(cfg.dataloader.test.dataset)
        sample = instantiate(cfg.dataloader.test.mapper)(dataset[0])
    except Exception as e:  # noqa: BLE001 - any missing data means: use the default size
        logger.info(f"test data not available ({type(e).__name__}: {str(e)[:120]}); using {DEFAULT_SIZE}")
        return None
    return tuple(sample["image"].shape[-2:])


def build_model(cfg) -> torch.nn.Module:
    if "backbone" in cfg.model and "net" in cfg.model.backbone and "pretrained" in cfg.model.backbone.net:
        cfg.model.backbone.net.pretrained = False
        cfg.model.backbone.net.checkpoint_path = None
    return instantiate(cfg.model).eval()


def parameter_table(model: torch.nn.Module, max_depth: int) -> str:
    """Rows `module | parameters | trainable` down to `max_depth` dots."""
    total = parameter_count(model)
    rows = []
    for name, module in model.named_modules():
        depth = 0 if name == "" else name.count(".") + 1
        if depth > max_depth:
            continue
        n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
        rows.append((("  " * depth) + (name or "model"), total.get(name, 0), n_train))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'module'.ljust(width)} | {'parameters':>12} | {'trainable':>12}",
             f"{'-' * width}-|-{'-' * 12}-|-{'-' * 12}"]
    lines += [f"{n.ljust(width)} | {p:>12,} | {t:>12,}" for n, p, t in rows]
    return "\n".join(lines)


def count_flops(model: torch.nn.Module, image_size: Sequence[int], batch_size: int):
    h, w = image_size
    images = torch.randint(0, 256, (batch_size, 3, h, w), dtype=torch.uint8)
    mask = torch.ones(batch_size, h, w, dtype=torch.bool)
    analysis = FlopCountAnalysis(_ImagesToDetections(model), (images, mask))
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return analysis


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--depth", type=int, default=2, help="module depth of the tables (default 2)")
    parser.add_argument("--no-flops", action="store_true", help="parameters only (no forward pass)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    torch.manual_seed(0)
    model = build_model(cfg)
    print(parameter_table(model, args.depth))
    n_params = sum(p.numel() for p in model.parameters())
    result = {"config": args.config_file, "parameters": n_params,
              "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if not args.no_flops:
        size = tuple(args.image_size) if args.image_size else (_first_test_image_size(cfg) or DEFAULT_SIZE)
        with torch.no_grad():
            analysis = count_flops(model, size, args.batch_size)
            total = analysis.total()
        print()
        print(f"FLOPs (fused multiply-adds) of one inference forward, batch {args.batch_size} x {size[0]}x{size[1]}:")
        print(flop_count_table(analysis, max_depth=args.depth, show_param_shapes=False))
        skipped = analysis.unsupported_ops()
        if skipped:
            print("not counted (no fvcore formula): " + ", ".join(f"{k} x{v}" for k, v in sorted(skipped.items())))
        result.update(image_size=list(size), batch_size=args.batch_size, gflops=total / 1e9,
                      gflops_per_image=total / 1e9 / args.batch_size,
                      gflops_by_module={k[len("model."):]: v / 1e9 for k, v in analysis.by_module().items()
                                        if k.startswith("model.") and k.count(".") == 1})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
