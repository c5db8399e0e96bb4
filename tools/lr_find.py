"""Learning-rate range test: raise the lr exponentially over real training batches, plot the smoothed loss
against it, and suggest an lr.

    python -m tools.lr_find --config-file F [--start 1e-7] [--end 1] [--iters 100] [key=value ...]

The parameter groups keep their lr ratios (backbone multipliers etc.); the lr shown is the largest group's.
Writes plots/lr_find.png under train.output_dir (or --output-dir). Prints where the loss falls fastest,
a tenth of the lr at the loss minimum, and a tenth of the lr where it explodes (the more careful choices).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from lazydet.diagnostics import probes


def main(argv=None) -> int:
    """Run the range test on the recipe's parts, plot it and print the suggestions; exit status 1 without one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="recipe (.py) or saved config.yaml")
    parser.add_argument("--start", type=float, default=1e-7, help="first lr (default 1e-7)")
    parser.add_argument("--end", type=float, default=1.0, help="last lr (default 1)")
    parser.add_argument("--iters", type=int, default=100, help="steps (default 100)")
    parser.add_argument("--batches", type=int, default=20, help="distinct batches cycled through (default 20)")
    parser.add_argument("--device", default=None, help="default: train.device")
    parser.add_argument("--output-dir", default=None, help="default: train.output_dir")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    if not 0 < args.start < args.end:
        parser.error(f"need 0 < --start < --end, got {args.start} and {args.end}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    parts = probes.build_parts(args.config_file, args.opts, args.device)
    cfg, model, optimizer = parts.cfg, parts.model, parts.optimizer
    batches = probes.train_batches(parts, min(args.batches, args.iters))
    lrs, losses = probes.lr_range_test(model, optimizer, batches, args.start, args.end, args.iters,
                                       probes.clip_norm(cfg))
    sug = probes.suggest_lr(lrs, losses)
    out_dir = args.output_dir or cfg.train.output_dir
    plot = probes.save_plot(os.path.join(out_dir, "plots", "lr_find.png"), lrs, losses, logx=True,
                            title="learning-rate range test", xlabel="lr", ylabel="smoothed total loss",
                            marks={"steepest": sug["steepest"], "min/10": sug["min_div_10"],
                                   "explode/10": sug["explode_div_10"]})
    print(f"tested {len(lrs)} lrs from {lrs[0]:.2e} to {lrs[-1]:.2e} (recipe lr {cfg.optimizer.lr})"
          if lrs else "the loss was non-finite from the first step")
    if sug["min_div_10"] is None:
        print("not enough finite steps for a suggestion: lower --start, raise --iters, or check the recipe")
        return 1
    fmt = lambda v: "n/a" if v is None else f"{v:.3g}"  # noqa: E731
    print(f"suggested lr: steepest descent {fmt(sug['steepest'])}; loss minimum / 10 {fmt(sug['min_div_10'])}; "
          f"explosion point / 10 {fmt(sug['explode_div_10'])}")
    if sug["steepest"] is None:
        print("the loss shows no clear descent: use more --iters (a few hundred) or a smaller --start")
    print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
