"""One-shot GPU report: deformable-attention kernel vs PyTorch, Table 2, fp16 + GradScaler, inference + COCO eval.

    timeout 330 python -m tools.gpu_report --out output/gpu_report_$(date +%H%M%S)   # on a GPU, <= 5 min
    python -m tools.gpu_report --tiny --device cpu --out /tmp/gpu_report_tiny          # the same, tiny, on a CPU

Each part runs in its own process under its own cap (--cap PART=SECONDS; parts: kernel, table2, fp16,
inference; the caps add up to the whole budget) and its results are written as soon as it has them:
DIR/parts/<part>.json (+ .log), then DIR/report.md (printed at the end), report.json, report.png and
DIR/table2/ (table.md, results.csv/json, chart.png). A part that fails or overruns is recorded with its
reason and the next part runs. Exit status 0 when every part ended ok, 1 otherwise.
"""
import argparse
import os
import sys

from lazydet.analysis.gpu_report import PART_NAMES, run_report, settings_for
from lazydet.config import ConfigError


def _cap(text: str):
    name, sep, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not sep or value <= 0:
        raise argparse.ArgumentTypeError(f"--cap {text!r}: expected PART=SECONDS with PART one of {', '.join(PART_NAMES)}")
    return name, value


def parse_args(argv=None):
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (must not hold an earlier report)")
    p.add_argument("--tiny", action="store_true", help="quickstart recipe at 56x70, few iterations (CPU check)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda, or cpu with --tiny)")
    p.add_argument("--config-file", default=None,
                   help="recipe to time (default: COCO dino_dinov2_b_12ep; quickstart with --tiny)")
    p.add_argument("--cap", action="append", type=_cap, default=[], metavar="PART=SECONDS",
                   help="change one part's time cap (repeatable)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run the report into --out, print report.md; 0 when every part ended ok, else 1."""
    args = parse_args(argv)
    if os.path.exists(os.path.join(args.out, "report.json")):
        sys.exit(f"error: --out {args.out} already holds a report (report.json); choose a new folder")
    if args.config_file and not os.path.isfile(args.config_file):
        sys.exit(f"error: --config-file {args.config_file!r} does not exist")
    try:
        settings = settings_for(args.tiny, args.config_file, args.device, dict(args.cap))
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        report = run_report(settings, args.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    except ConfigError as e:  # the recipe does not load: one line, before any part starts
        sys.exit(f"error: {e}")
    with open(os.path.join(args.out, "report.md")) as f:
        print(f.read())
    print(f"wrote {os.path.join(args.out, 'report.md')}, report.json, report.png, parts/, table2/")
    return 0 if all(s["status"] == "ok" for s in report["parts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
