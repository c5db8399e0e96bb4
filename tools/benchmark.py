"""Benchmark a recipe: seconds per training iteration (data excluded and included), inference images/s,
peak memory and parameter count. Prints a table and JSON.

    python -m tools.benchmark --config-file projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py \
        --batch-size 2 --iters 10 --device cpu [--precision bf16] [--image-size 224] [key=value ...]

Training iterations run through the engine's Trainer (forward, loss, backward, clipping, optimizer step)
after --warmup untimed ones; on CUDA the clock is read after synchronising. Memory: CUDA peak allocated /
reserved, on CPU the peak RSS of this process.
"""
import argparse
import json
import os
import sys

import torch


def parse_args(argv=None):
    """The benchmark's command line (also used by tools.train_step_memory)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--batch-size", type=int, default=None, help="total training batch (default: the recipe's)")
    p.add_argument("--image-size", type=int, default=None, help="resize batches to S x S")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default=None, help="cpu / cuda (default: the recipe's train.device)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--json-out", default=None, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p.parse_args(argv)


def main(argv=None):
    """Time training (data excluded and included) and inference of the recipe; print a table and JSON."""
    from lazydet.analysis.timing import (build_parts, count_parameters, load_recipe, memory_stats,
                                         precision_supported, time_inference, time_training)

    args = parse_args(argv)
    if not os.path.isfile(args.config_file):
        sys.exit(f"error: --config-file {args.config_file!r} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_recipe(args.config_file, args.overrides, args.batch_size, args.device)
    parts = build_parts(cfg)
    skip = precision_supported(args.precision, parts.device)
    if skip:
        sys.exit(f"error: --precision {args.precision}: {skip}")
    batch = int(cfg.dataloader.train.total_batch_size)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    log(f"training, data excluded: {args.warmup} + {args.iters} iterations ...")
    excluded = time_training(parts, args.precision, args.iters, args.warmup, image_size=args.image_size)
    log(f"training, data included: {args.warmup} + {args.iters} iterations ...")
    included = time_training(parts, args.precision, args.iters, args.warmup, include_data=True,
                             image_size=args.image_size)
    log("inference ...")
    ips = time_inference(parts, iters=max(1, args.iters // 2), image_size=args.image_size, precision=args.precision)
    mem = memory_stats(parts.device)
    device_name = torch.cuda.get_device_name(parts.device) if parts.device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    report = {
        "config_file": args.config_file, "device": device_name, "precision": args.precision, "batch_size": batch,
        "image_size": args.image_size, "iters": args.iters, "warmup": args.warmup,
        "train_s_per_iter_data_excluded": vars(excluded), "train_s_per_iter_data_included": vars(included),
        "inference_images_per_s": ips, "memory": vars(mem), "parameters": count_parameters(parts.model),
    }
    rows = [
        ("train s/iter, data excluded", f"{excluded.median:.4f} (min {excluded.min:.4f}, max {excluded.max:.4f})"),
        ("train s/iter, data included", f"{included.median:.4f} (min {included.min:.4f}, max {included.max:.4f})"),
        ("inference images/s", f"{ips:.2f}"),
        ("peak memory", mem.describe()),
        ("parameters", f"{report['parameters']['total']:,} ({report['parameters']['trainable']:,} trainable)"),
    ]
    print(f"{os.path.basename(args.config_file)} on {device_name}, {args.precision}, batch {batch}"
          + (f", {args.image_size}x{args.image_size}" if args.image_size else ""))
    print("| measure | value |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
