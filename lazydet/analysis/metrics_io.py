"""Read the `metrics.json` JSON lines that a run writes (see DESIGN.md "Output folder").

A run that is still going may have a half-written last line; a resumed run appends iterations it has
already logged. Both are normal, so the reader skips a broken *last* line and keeps the latest record of
each iteration. A broken line in the middle of the file is corruption and raises an error naming the line.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

METRICS_FILE = "metrics.json"


class MetricsError(ValueError):
    """Bad or missing metrics input; the message is one actionable line."""


@dataclass
class Run:
    """The records of one run, sorted by iteration, one record per iteration."""

    name: str
    path: str  # the metrics.json file
    records: List[dict] = field(default_factory=list)
    skipped_partial_line: bool = False

    @property
    def output_dir(self) -> str:
        """The run's folder (where its metrics.json lives), absolute."""
        return os.path.dirname(os.path.abspath(self.path))

    def metric_names(self) -> List[str]:
        """Sorted names of every numeric key found in any record (metrics, `iteration`, `epoch`, ...)."""
        names = set()
        for rec in self.records:
            names.update(k for k, v in rec.items() if _is_number(v))
        return sorted(names)

    def series(self, name: str, x: str = "iteration") -> tuple:
        """(xs, ys) of the records that carry the finite metric `name`; x is any numeric key."""
        xs, ys = [], []
        for rec in self.records:
            if _is_number(rec.get(name)) and _is_number(rec.get(x)) and math.isfinite(rec[name]):
                xs.append(float(rec[x]))
                ys.append(float(rec[name]))
        return xs, ys


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve_metrics_path(path: str) -> str:
    """Accept a run's output directory or a metrics.json file."""
    candidate = os.path.join(path, METRICS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        where = f"directory {path!r} has no {METRICS_FILE}" if os.path.isdir(path) else f"{path!r} does not exist"
        raise MetricsError(f"cannot read metrics: {where}; pass a run's output directory or its {METRICS_FILE}")
    return candidate


def parse_metrics_lines(lines: Sequence[str], source: str = "<metrics>") -> tuple:
    """Parse JSON lines into (records sorted by iteration with duplicates resolved, skipped_partial_last_line)."""
    by_iter: Dict[int, dict] = {}
    without_iter: List[dict] = []
    skipped = False
    non_empty = [(i, ln) for i, ln in enumerate(lines, start=1) if ln.strip()]
    for pos, (lineno, line) in enumerate(non_empty):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if pos == len(non_empty) - 1:  # a running job is mid-write: ignore the tail
                skipped = True
                continue
            raise MetricsError(f"{source}:{lineno}: not valid JSON ({e.msg}); the file is corrupt") from None
        if not isinstance(rec, dict):
            raise MetricsError(f"{source}:{lineno}: expected a JSON object per line, got {type(rec).__name__}")
        it = rec.get("iteration")
        if _is_number(it):
            # A resumed run logs an iteration again: merge, the later value wins.
            by_iter.setdefault(int(it), {}).update(rec)
        else:
            without_iter.append(rec)
    records = [by_iter[k] for k in sorted(by_iter)]
    return records + without_iter, skipped


def load_run(path: str, name: Optional[str] = None) -> Run:
    """Load one run from its output directory or metrics.json path."""
    metrics_path = resolve_metrics_path(path)
    with open(metrics_path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    records, skipped = parse_metrics_lines(lines, source=metrics_path)
    if not records:
        raise MetricsError(f"{metrics_path}: no metric records yet")
    if name is None:
        base = os.path.dirname(os.path.abspath(metrics_path))
        name = os.path.basename(base) if os.path.basename(metrics_path) == METRICS_FILE else os.path.basename(metrics_path)
    return Run(name=name, path=metrics_path, records=records, skipped_partial_line=skipped)


def load_runs(paths: Sequence[str]) -> List[Run]:
    """Load several runs; names are made unique so legends and tables can tell them apart."""
    runs = [load_run(p) for p in paths]
    seen: Dict[str, int] = {}
    for run in runs:
        if run.name in seen:
            seen[run.name] += 1
            run.name = f"{run.name}#{seen[run.name]}"
        else:
            seen[run.name] = 0
    return runs


def to_epochs(run: Run, iterations: Sequence[float], iters_per_epoch: Optional[float] = None) -> List[float]:
    """Convert logged iterations (0-based, logged after the step) to epochs completed.

    Uses `iters_per_epoch` when given, else the ratio implied by records that log both `iteration` and a
    non-zero `epoch`. Raises a clear error when neither is available.
    """
    ipe = iters_per_epoch if iters_per_epoch else infer_iters_per_epoch(run)
    if not ipe:
        raise MetricsError(
            f"{run.path}: cannot convert iterations to epochs (no 'epoch' in the records); pass --iters-per-epoch K"
        )
    return [(float(it) + 1.0) / ipe for it in iterations]


def infer_iters_per_epoch(run: Run) -> Optional[float]:
    """Iterations per epoch implied by records carrying both iteration and epoch (or an explicit key)."""
    for rec in reversed(run.records):
        if _is_number(rec.get("iters_per_epoch")) and rec["iters_per_epoch"] > 0:
            return float(rec["iters_per_epoch"])
    pairs = [(r["iteration"], r["epoch"]) for r in run.records if _is_number(r.get("epoch")) and _is_number(r.get("iteration"))]
    pairs = [(it, ep) for it, ep in pairs if ep > 0]
    if not pairs:
        return None
    if all(float(ep).is_integer() for _, ep in pairs):
        # Integer epochs are floor((it+1)/ipe) or similar: the first iteration of each new epoch pins ipe.
        firsts = {}
        for it, ep in pairs:
            firsts.setdefault(int(ep), it)
        if len(firsts) >= 2:
            eps = sorted(firsts)
            spans = [(firsts[b] - firsts[a]) / (b - a) for a, b in zip(eps, eps[1:])]
            return float(sorted(spans)[len(spans) // 2])
        (ep, it), = firsts.items()
        return (it + 1.0) / ep
    it, ep = pairs[-1]
    return (it + 1.0) / ep
