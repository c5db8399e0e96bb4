"""Forecast a validation metric (default bbox/AP) at a target epoch from one or several runs' metrics.json.

    python -m tools.forecast_curve output/run1 [output/run2/metrics.json ...] --metric bbox/AP --target-epoch 50

Prints every model's held-out error and forecast, the chosen model's forecast with an interval, and
warnings about lr drops; writes PNGs and a JSON summary into each run's plots/ folder.
"""
import argparse
import json
import os
import sys

from lazydet.analysis.curves import CurveFitError
from lazydet.analysis.forecast import format_report, forecast_run
from lazydet.analysis.metrics_io import MetricsError, load_runs
from lazydet.analysis.plots import plot_forecast_set, safe_name


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_METRICS_JSON")
    p.add_argument("--metric", default="bbox/AP")
    p.add_argument("--target-epoch", type=float, default=50.0)
    p.add_argument("--iters-per-epoch", type=float, default=None,
                   help="iterations per epoch (default: from the records' 'epoch' field)")
    p.add_argument("--lr-drop-epochs", type=float, nargs="*", default=[],
                   help="epochs where the lr drops, in addition to those in the logged lr and config.yaml")
    p.add_argument("--min-epoch", type=float, default=None, help="ignore points before this epoch")
    p.add_argument("--max-epoch", type=float, default=None, help="ignore points after this epoch")
    p.add_argument("--heldout", type=int, default=None, help="number of last points held out (default 20%%, >= 2)")
    p.add_argument("--level", type=float, default=0.95, help="interval level")
    p.add_argument("--bootstrap", type=int, default=300, help="bootstrap resamples for the interval")
    p.add_argument("--plots-dir", default=None, help="where PNGs go (default: <run>/plots)")
    p.add_argument("--no-plots", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except MetricsError as e:
        sys.exit(f"error: {e}")
    failures = 0
    for run in runs:
        try:
            result = forecast_run(run, args.metric, args.target_epoch, args.iters_per_epoch, args.lr_drop_epochs,
                                  args.min_epoch, args.max_epoch, args.heldout, args.level, args.bootstrap)
        except (MetricsError, CurveFitError) as e:
            print(f"error: {run.name}: {e}", file=sys.stderr)
            failures += 1
            continue
        print(format_report(result))
        if not args.no_plots:
            out_dir = args.plots_dir or os.path.join(run.output_dir, "plots")
            if args.plots_dir and len(runs) > 1:
                out_dir = os.path.join(out_dir, safe_name(run.name))
            paths = plot_forecast_set(result, run, out_dir)
            summary = os.path.join(out_dir, f"forecast_{safe_name(args.metric)}.json")
            with open(summary, "w") as f:
                json.dump(result.to_dict(), f, indent=2)
            print("wrote " + ", ".join(paths + [summary]))
        print()
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
