"""Precision ablation: backbone x precision x batch size, each cell in its own fresh process.

A fresh process per cell keeps memory figures honest (CPU peak RSS and the CUDA caching allocator never
shrink within a process) and contains crashes: a cell that runs out of memory or fails is reported as
OOM/failed with its reason and the table still completes. The child is `python -m lazydet.analysis.ablation
--cell JSON`; it prints one result line that the parent parses.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

RESULT_PREFIX = "ABLATION_RESULT "
RECIPE_BACKBONE = "recipe"  # a --backbones entry meaning "the recipe's own backbone, no override"
CPU_FP16_NOTE = "fp16 autocast + GradScaler is not a CPU training mode (no fast fp16 kernels)"
OOM_MARKERS = ("out of memory", "outofmemoryerror", "memoryerror", "cannot allocate memory")


@dataclass
class Cell:
    """One configuration to time: `backbone` (a timm name, or "recipe" for the recipe's own) x `precision`
    ("fp32", "bf16", "fp16") x `batch_size`, on `config_file` with `overrides`; `warmup` + `iters` training
    steps, optionally resized to `image_size` and pinned to `device` / `threads`. Sent to a child process as JSON."""

    config_file: str
    backbone: str
    precision: str
    batch_size: int
    iters: int
    warmup: int
    backbone_key: str = "model.backbone.net.model_name"
    image_size: Optional[int] = None
    device: Optional[str] = None
    overrides: List[str] = field(default_factory=list)
    threads: Optional[int] = None


@dataclass
class CellResult:
    """What one cell measured: `status` "ok" with seconds per iteration (median/min/max over `iters`) and
    peak memory, or "OOM" / "failed" / "skipped" with a one-line `reason`. `speedup` and `memory_saving` are
    filled in afterwards relative to the fp32 cell of the same backbone and batch size."""

    backbone: str
    precision: str
    batch_size: int
    status: str  # ok | OOM | failed | skipped
    reason: str = ""
    time_median: Optional[float] = None
    time_min: Optional[float] = None
    time_max: Optional[float] = None
    iters: Optional[int] = None
    memory_mib: Optional[float] = None  # CUDA allocated, or CPU peak RSS
    reserved_mib: Optional[float] = None
    memory_kind: str = ""
    speedup: Optional[float] = None  # fp32 time / this time, same backbone and batch
    memory_saving: Optional[float] = None  # 1 - this memory / fp32 memory
    wall_seconds: Optional[float] = None


def cell_overrides(cell: Cell) -> List[str]:
    """The config overrides a cell runs with: its own `overrides` plus the backbone key, unless the cell
    keeps the recipe's backbone."""
    extra = list(cell.overrides)
    if cell.backbone != RECIPE_BACKBONE:
        extra.append(f"{cell.backbone_key}={cell.backbone}")
    return extra


def run_cell_here(cell: Cell) -> CellResult:
    """Run one cell in this process (the child side)."""
    import torch

    from .timing import build_parts, load_recipe, memory_stats, precision_supported, time_training

    res = CellResult(cell.backbone, cell.precision, cell.batch_size, status="ok")
    try:
        if cell.threads:
            torch.set_num_threads(cell.threads)
        cfg = load_recipe(cell.config_file, cell_overrides(cell), cell.batch_size, cell.device)
        from lazydet.utils import resolve_device

        skip = precision_supported(cell.precision, resolve_device(cfg.train.device))
        if skip:
            res.status, res.reason = "skipped", skip
            return res
        parts = build_parts(cfg)
        stats = time_training(parts, cell.precision, cell.iters, cell.warmup, image_size=cell.image_size)
        mem = memory_stats(parts.device)
        res.time_median, res.time_min, res.time_max, res.iters = stats.median, stats.min, stats.max, stats.iters
        res.memory_mib, res.reserved_mib = mem.main_mib, mem.reserved_mib
        res.memory_kind = "CUDA allocated" if mem.allocated_mib is not None else "peak RSS"
    except (torch.OutOfMemoryError, MemoryError) as e:
        res.status, res.reason = "OOM", _one_line(e)
    except Exception as e:  # noqa: BLE001 - any failure is a table entry, not a crash
        res.status = "OOM" if _looks_like_oom(str(e)) else "failed"
        res.reason = _one_line(e)
        traceback.print_exc()
    return res


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


def _looks_like_oom(text: str) -> bool:
    low = text.lower()
    return any(m in low for m in OOM_MARKERS)


def run_cell_subprocess(cell: Cell, timeout: float = 1800.0, env: Optional[dict] = None) -> CellResult:
    """Run one cell in a fresh `python -m lazydet.analysis.ablation --cell` process and parse its result."""
    start = time.perf_counter()
    if cell.precision == "fp16" and str(cell.device).startswith("cpu"):  # known without starting a process
        return CellResult(cell.backbone, cell.precision, cell.batch_size, "skipped", CPU_FP16_NOTE, wall_seconds=0.0)
    cmd = [sys.executable, "-m", "lazydet.analysis.ablation", "--cell", json.dumps(asdict(cell))]
    child_env = dict(os.environ if env is None else env)
    if cell.threads:
        child_env.setdefault("OMP_NUM_THREADS", str(cell.threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env)
    except subprocess.TimeoutExpired:
        return CellResult(cell.backbone, cell.precision, cell.batch_size, "failed", f"timeout after {timeout:.0f} s",
                          wall_seconds=time.perf_counter() - start)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = CellResult(**json.loads(line[len(RESULT_PREFIX):]))
    if result is None:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = tail[-1].strip() if tail else f"exit code {proc.returncode}"
        if proc.returncode in (-9, 137) or _looks_like_oom(proc.stderr):
            status, reason = "OOM", f"killed (exit {proc.returncode}), likely out of memory: {last}"
        else:
            status, reason = "failed", f"exit {proc.returncode}: {last}"
        result = CellResult(cell.backbone, cell.precision, cell.batch_size, status, reason[:300])
    result.wall_seconds = time.perf_counter() - start
    return result


def add_relative_figures(results: Sequence[CellResult]) -> None:
    """Speed-up and memory saving of each cell against fp32 of the same backbone and batch size."""
    base = {(r.backbone, r.batch_size): r for r in results if r.precision == "fp32" and r.status == "ok"}
    for r in results:
        b = base.get((r.backbone, r.batch_size))
        if r.status != "ok" or b is None:
            continue
        r.speedup = b.time_median / r.time_median if r.time_median else None
        r.memory_saving = 1.0 - r.memory_mib / b.memory_mib if b.memory_mib else None


def run_ablation(cells: Sequence[Cell], timeout: float = 1800.0, log=print) -> List[CellResult]:
    """Runs every cell in its own subprocess (so an OOM or crash costs one cell, and memory peaks do not
    carry over), at most `timeout` seconds each, logging a line before and after; returns the results in
    cell order with the fp32-relative figures filled in."""
    results = []
    for i, cell in enumerate(cells, start=1):
        log(f"[{i}/{len(cells)}] {cell.backbone} {cell.precision} batch {cell.batch_size} ...")
        r = run_cell_subprocess(cell, timeout)
        summary = (f"{r.time_median:.3f} s/iter, {r.memory_mib:.0f} MiB" if r.status == "ok" else f"{r.status}: {r.reason}")
        log(f"[{i}/{len(cells)}] {cell.backbone} {cell.precision} batch {cell.batch_size}: {summary} "
            f"({r.wall_seconds:.0f} s)")
        results.append(r)
    add_relative_figures(results)
    return results


# ---- output -----------------------------------------------------------------------------------------------
HEADER = ["Backbone", "Precision", "Batch Size", "Time per Iteration", "Memory Usage", "Speed-up vs fp32",
          "Memory Saving vs fp32"]


def _time_text(r: CellResult) -> str:
    if r.status != "ok":
        return f"{r.status}: {r.reason}" if r.status != "skipped" else f"skipped ({r.reason})"
    return f"{r.time_median:.3f} s (min {r.time_min:.3f}, max {r.time_max:.3f}, n={r.iters})"


def _memory_text(r: CellResult) -> str:
    if r.status != "ok":
        return r.status
    if r.reserved_mib is not None:
        return f"{r.memory_mib:.0f} MiB alloc / {r.reserved_mib:.0f} MiB reserved"
    return f"{r.memory_mib:.0f} MiB ({r.memory_kind})"


def markdown_table(results: Sequence[CellResult]) -> str:
    """The results as a Markdown table (one row per cell, columns `HEADER`); failed cells show their
    status and reason instead of figures."""
    lines = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join("---" for _ in HEADER) + " |"]
    for r in results:
        speed = f"{r.speedup:.2f}x" if r.speedup is not None else "-"
        saving = f"{r.memory_saving:+.1%}" if r.memory_saving is not None else "-"
        row = [r.backbone, r.precision, str(r.batch_size), _time_text(r), _memory_text(r), speed, saving]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    return "\n".join(lines)


def write_outputs(results: Sequence[CellResult], out_dir: str, header: str = "") -> dict:
    """table.md, results.csv, results.json and chart.png in out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, n) for k, n in
             (("md", "table.md"), ("csv", "results.csv"), ("json", "results.json"), ("png", "chart.png"))}
    with open(paths["md"], "w") as f:
        f.write((header + "\n\n" if header else "") + markdown_table(results) + "\n")
    rows = [asdict(r) for r in results]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["json"], "w") as f:
        json.dump({"header": header, "results": rows}, f, indent=2)
    plot_chart(results, paths["png"], header)
    return paths


def plot_chart(results: Sequence[CellResult], path: str, title: str = "") -> str:
    """Bars of s/iter (min-max whiskers) and memory per cell; failed cells marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import textwrap

    labels = [f"{r.backbone.split('.')[0].split('_patch')[0]}\n{r.precision} b{r.batch_size}" for r in results]
    colors = {"fp32": "tab:blue", "bf16": "tab:orange", "fp16": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(results) * 2), 4.5))
    for ax, what in zip(axes, ("time", "memory")):
        for i, r in enumerate(results):
            c = colors.get(r.precision, "gray")
            if r.status != "ok":
                ax.text(i, 0, r.status, ha="center", va="bottom", rotation=90, color="red", fontsize=8)
                continue
            if what == "time":
                ax.bar(i, r.time_median, color=c, yerr=[[r.time_median - r.time_min], [r.time_max - r.time_median]],
                       capsize=3)
            else:
                ax.bar(i, r.memory_mib, color=c)
        ax.set_xticks(range(len(results)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("seconds per iteration (median, min-max)" if what == "time" else
                      f"MiB ({results[0].memory_kind if results else ''})".replace("()", ""))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("time per training iteration")
    axes[1].set_title("peak memory")
    if title:
        fig.suptitle(textwrap.fill(title, 140), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _child_main(argv=None):
    p = argparse.ArgumentParser(description="run one ablation cell (internal; used by tools.ablate_precision)")
    p.add_argument("--cell", required=True, help="the Cell as JSON")
    args = p.parse_args(argv)
    cell = Cell(**json.loads(args.cell))
    result = run_cell_here(cell)
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    _child_main()
