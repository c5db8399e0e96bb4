"""Training and validation curves of one or several runs in one figure (compare runs side by side).

    python -m tools.plot_metrics output/run_a output/run_b --out compare.png

Panels: training loss (raw + smoothed), lr, and the validation metrics that were logged.
"""
import argparse
import os
import sys

from lazydet.analysis.metrics_io import MetricsError, load_runs
from lazydet.analysis.plots import LOSS_KEY, plot_runs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="run output folders (or metrics.json files)")
    p.add_argument("--metrics", nargs="+", default=["bbox/AP", "bbox/AP50"], help="validation metrics to plot")
    p.add_argument("--loss", default=LOSS_KEY, help="training loss key")
    p.add_argument("--smoothing", type=float, default=0.9, help="EMA weight for the loss, in [0, 1)")
    p.add_argument("--iters-per-epoch", type=float, default=None, help="plot against epochs")
    p.add_argument("--out", default=None,
                   help="PNG path (default: <run>/plots/metrics.png for one run, <first run>/plots/compare.png for several)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except MetricsError as e:
        sys.exit(f"error: {e}")
    out = args.out or os.path.join(runs[0].output_dir, "plots", "metrics.png" if len(runs) == 1 else "compare.png")
    try:
        path = plot_runs(runs, out, args.metrics, args.loss, args.smoothing, args.iters_per_epoch)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
