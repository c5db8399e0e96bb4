"""Mixed-precision ablation: seconds per training iteration and peak memory per backbone x precision x batch.

    python -m tools.ablate_precision --config-file projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py \
        --backbones recipe vit_small_patch14_dinov2.lvd142m --precisions fp32 bf16 fp16 --batch-sizes 2 4 \
        --iters 5 --warmup 2 --image-size 112 --device cpu --out output/ablation [key=value ...]

Each cell runs real training iterations of the recipe in a fresh process. `recipe` as a backbone keeps the
recipe's own. Writes table.md, results.csv, results.json and chart.png into --out.
"""
import argparse
import os
import platform
import sys

from lazydet.analysis.ablation import RECIPE_BACKBONE, Cell, markdown_table, run_ablation, write_outputs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--backbones", nargs="+", default=[RECIPE_BACKBONE],
                   help=f"timm model names, or '{RECIPE_BACKBONE}' for the recipe's own")
    p.add_argument("--backbone-key", default="model.backbone.net.model_name", help="config key the backbone name sets")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[2, 4])
    p.add_argument("--iters", type=int, default=10, help="timed iterations per cell")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--image-size", type=int, default=None, help="resize training batches to S x S")
    p.add_argument("--device", default=None, help="cpu / cuda (default: the recipe's train.device)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per cell (CPU)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before a cell counts as failed")
    p.add_argument("--out", default="output/ablate_precision")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides for every cell")
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"overrides must be key=value, got {bad}")
    return args


def describe_device(config_file, device):
    import torch

    from lazydet.config import LazyConfig
    from lazydet.utils import resolve_device

    name = device
    if name is None:
        cfg = LazyConfig.load(config_file)
        name = cfg.train.device
    dev = resolve_device(name)
    if dev.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.config_file):
        sys.exit(f"error: --config-file {args.config_file!r} does not exist")
    cells = [Cell(args.config_file, b, p, bs, args.iters, args.warmup, args.backbone_key, args.image_size, args.device,
                  list(args.overrides), args.threads)
             for b in args.backbones for bs in args.batch_sizes for p in args.precisions]
    header = (f"{os.path.basename(args.config_file)} on {describe_device(args.config_file, args.device)}; {args.iters} timed iterations "
              f"after {args.warmup} warm-up" + (f", images {args.image_size}x{args.image_size}" if args.image_size else "")
              + (f", overrides {' '.join(args.overrides)}" if args.overrides else ""))
    results = run_ablation(cells, args.timeout, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(header + "\n")
    print(markdown_table(results))
    paths = write_outputs(results, args.out, header)
    print("\nwrote " + ", ".join(paths.values()))


if __name__ == "__main__":
    main()
