"""Seconds per training iteration and peak memory of a recipe, training only (no loader timing, no
inference): the cheap half of tools.benchmark, for A/B comparisons that need many fresh processes, such as
the deformable attention cores on a CPU (docs/models.md). Prints one JSON line.

    python -m tools.train_step_memory --config-file projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py \
        --batch-size 2 --image-size 512 --iters 2 --warmup 1 [key=value ...]

Run each measurement in a fresh process: on the CPU the memory figure is the peak RSS of the process.
"""
import json
import sys

import torch

from tools.benchmark import parse_args


def main(argv=None):
    """Time training steps of the recipe and print s/iter and peak memory as one JSON line."""
    from lazydet.analysis.timing import build_parts, load_recipe, memory_stats, time_training

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_recipe(args.config_file, args.overrides, args.batch_size, args.device)
    parts = build_parts(cfg)
    stats = time_training(parts, args.precision, args.iters, args.warmup, image_size=args.image_size)
    memory = memory_stats(parts.device)
    report = {"config_file": args.config_file, "precision": args.precision, "image_size": args.image_size,
              "batch_size": int(cfg.dataloader.train.total_batch_size), "s_per_iter": vars(stats),
              "memory": vars(memory), "memory_mib": memory.main_mib}
    print(json.dumps(report))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
