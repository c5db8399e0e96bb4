"""Run the training doctor's series checks on a finished or running run and print the report.

    python -m tools.diagnose OUTPUT_DIR [--window N] [--warmup-iters N] [--write]

Reads OUTPUT_DIR/metrics.json (JSON lines, a half-written last line of a running job is skipped) and the
doctor settings of the run from OUTPUT_DIR/config.yaml when present. The settings' windows (in
iterations) are converted to logged rows (one per `train.log_period` iterations); --window is in rows.
Exit status: 0 no problem, 1 problems found, 2 bad input.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from lazydet.analysis.metrics_io import MetricsError, load_run
from lazydet.diagnostics.checks_loss import run_series_checks
from lazydet.diagnostics.findings import DoctorReport
from lazydet.diagnostics.settings import merge_settings


def run_settings(output_dir: str) -> dict:
    """`train.doctor` of the run (config.yaml), merged over the defaults; the defaults when absent."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return merge_settings(None)
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(path)
    return merge_settings(OmegaConf.select(cfg, "train.doctor"))


def in_rows(settings: dict, log_period: float) -> dict:
    """The hook counts windows in iterations; metrics.json has one row per `log_period` iterations."""
    def rows(n, low):
        return max(low, round(n / log_period))
    settings["loss"]["window"] = rows(settings["loss"]["window"], 5)
    settings["grad"]["recent"] = rows(settings["grad"]["recent"], 2)
    settings["grad"]["baseline"] = rows(settings["grad"]["baseline"], 5)
    return settings


def diagnose(output_dir: str, window: int | None = None, warmup_iters: int | None = None) -> DoctorReport:
    run = load_run(output_dir)
    its = [r["iteration"] for r in run.records if "total_loss" in r]
    log_period = float(np.median(np.diff(its))) if len(its) > 1 else 1.0
    settings = in_rows(run_settings(run.output_dir), log_period)
    if window:
        settings["loss"]["window"] = window
    if warmup_iters is not None:
        settings["warmup_iters"] = warmup_iters

    def series(name):
        xs, ys = run.series(name)
        return [(int(x), y) for x, y in zip(xs, ys)]

    loss = series("total_loss")
    report = DoctorReport(log=False)
    report.extend(run_series_checks(loss, series("grad_norm"), series(settings["eval"]["metric"]),
                                    series("val/total_loss"), settings))
    last = run.records[-1].get("iteration")
    report.sections["Run"] = (f"- {run.path}: {len(run.records)} logged rows up to iteration {last}; "
                              f"{len(loss)} with total_loss"
                              + ("; skipped a half-written last line (still running?)" if run.skipped_partial_line
                                 else ""))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="the run's output directory (or its metrics.json)")
    parser.add_argument("--window", type=int, default=None, help="rows per window (default: the run's doctor setting)")
    parser.add_argument("--warmup-iters", type=int, default=None, help="iterations before the slope test applies")
    parser.add_argument("--write", action="store_true", help="also write OUTPUT_DIR/doctor_report_offline.md")
    args = parser.parse_args(argv)
    try:
        report = diagnose(args.output_dir, args.window, args.warmup_iters)
    except (MetricsError, KeyError) as e:
        print(f"diagnose: {e}", file=sys.stderr)
        return 2
    print(report.to_markdown())
    if args.write:
        out = args.output_dir if os.path.isdir(args.output_dir) else os.path.dirname(args.output_dir)
        print(f"written: {report.write(out, 'doctor_report_offline.md')}")
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
