"""The GPU report's outputs: report.md (also printed), report.json, report.png and table2/ (the ablation's files).

Every part's table is rendered from its rows as they stand (a part that failed or overran its cap shows
what it measured before, and its status); the goals of issue 10 are printed beside the figures.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import List, Optional

from lazydet.checkpoint.atomic import atomic_open, atomic_write_text

from .ablation import CellResult, add_relative_figures, markdown_table, write_outputs
from .kernel_bench import BASELINES
from .part_runner import atomic_write_json

KERNEL_GOAL = {"speedup": 3.0, "leaner": 2.0}  # Triton fwd+bwd vs the PyTorch path, same case and dtype
TABLE2_GOAL = {"backbone": "vit_base", "precision": "bf16", "batch_size": 2, "seconds": 0.2,
               "memory_mib": 6e9 / 2**20}  # 6 GB = 5722 MiB of max_memory_allocated


def _gpu_name() -> str:
    """The GPU's name from nvidia-smi: asking torch would create a CUDA context in the report's own process,
    which would hold GPU memory for the whole run."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        out = []
    return f"CUDA {out[0]}" if out else "CUDA GPU (nvidia-smi gave no name)"


def describe_environment(settings, recipe: str, size) -> dict:
    """Machine, library versions, commit and sizes: the report's header."""
    import torch

    gpu = _gpu_name() if settings.device.startswith("cuda") and torch.cuda.is_available() else None
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": gpu or f"CPU {platform.machine()} ({os.cpu_count()} cores)", "torch": torch.__version__,
            "triton": triton_version, "commit": commit, "recipe": settings.config_file, "timed_recipe": recipe,
            "image_size": list(size), "batch_size": settings.batch_size}


def _f(value, fmt: str = ".3g", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _status(state: dict) -> str:
    reason = state.get("reason")
    timing = f" in {state['wall_s']:.0f} s of its {state['cap_s']:.0f} s cap" if "wall_s" in state else ""
    return f"**{state.get('status', 'running')}**" + (f": {reason}" if reason else "") + timing


def _kernel_ratios(row: dict, baselines: dict) -> tuple:
    """(faster, leaner, goal) texts of a row against each baseline row of its case and precision."""
    faster, leaner, goal = [], [], []
    for name in BASELINES:
        b = baselines.get((row["case"], row["precision"], name))
        if b is None or row["impl"] in BASELINES:
            continue
        speed = b["ms_median"] / row["ms_median"]
        lean = b["peak_mib"] / row["peak_mib"] if b["peak_mib"] and row["peak_mib"] else None
        faster.append(f"{speed:.2f}x vs {name}")
        leaner.append(f"{_ratio(lean)} vs {name}")
        met = lean is not None and speed >= KERNEL_GOAL["speedup"] and lean >= KERNEL_GOAL["leaner"]
        goal.append(f"{'met' if met else 'not met'} vs {name}")
    return tuple("; ".join(x) or "-" for x in (faster, leaner, goal))


def kernel_sections(rows: List[dict]) -> List[str]:
    """Timing table with speed-up / memory ratio against the PyTorch baselines and the goal; numerical check."""
    timing = [r for r in rows if r.get("kind") == "timing"]
    baselines = {(r["case"], r["precision"], r["impl"]): r for r in timing if r["status"] == "ok"}
    lines = ["| case | queries | precision | impl | fwd+bwd ms (median, min-max) | peak MiB above inputs | "
             "faster | leaner | goal >= 3x faster and >= 2x leaner |", "| " + " | ".join(["---"] * 9) + " |"]
    for r in timing:
        if r["status"] != "ok":
            lines.append(f"| {r['case']} | {r['queries']} | {r['precision']} | {r['impl']} | "
                         f"{r['status']}: {r['reason']} | | | | |")
            continue
        faster, leaner, goal = _kernel_ratios(r, baselines)
        lines.append(f"| {r['case']} | {r['queries']} | {r['precision']} | {r['impl']} | {r['ms_median']:.2f} "
                     f"({r['ms_min']:.2f}-{r['ms_max']:.2f}) | {_f(r['peak_mib'], '.0f')} | "
                     f"{faster} | {leaner} | {goal} |")
    checks = [r for r in rows if r.get("kind") == "check"]
    if checks:
        lines += ["", "Max abs difference against the PyTorch path in fp32 on the same inputs (largest |reference| in "
                  "brackets):", "", "| case | precision | impl | output | grad value | grad sampling locations | "
                  "grad attention weights |", "| " + " | ".join(["---"] * 7) + " |"]
        for r in checks:
            if r["status"] != "ok":
                lines.append(f"| {r['case']} | {r['precision']} | {r['impl']} | {r['status']}: {r['reason']} | | | |")
                continue
            cells = [f"{r[k]:.2e} ({r[k + '_scale']:.2g})" for k in
                     ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")]
            lines.append(f"| {r['case']} | {r['precision']} | {r['impl']} | " + " | ".join(cells) + " |")
    return lines


def table2_results(rows: List[dict]) -> List[CellResult]:
    """The table2 part's rows as the ablation's CellResults, with speed-up / saving against fp32."""
    results = [CellResult(**r) for r in rows]
    add_relative_figures(results)
    return results


def table2_sections(rows: List[dict]) -> List[str]:
    """The seed's Table 2 layout (the ablation's table) and the ViT-B bf16 goal."""
    results = table2_results(rows)
    g = TABLE2_GOAL
    lines = [markdown_table(results), ""]
    hit = [r for r in results if g["backbone"] in r.backbone and r.precision == g["precision"]
           and r.batch_size == g["batch_size"] and r.status == "ok"]
    for r in hit:
        met = r.time_median <= g["seconds"] and r.memory_mib <= g["memory_mib"]
        lines.append(f"Goal ViT-B bf16 batch 2 <= {g['seconds']} s/iter and <= 6 GB ({g['memory_mib']:.0f} MiB "
                     f"allocated): {r.time_median:.3f} s, {r.memory_mib:.0f} MiB -> **{'met' if met else 'not met'}**")
    if not hit:
        lines.append(f"Goal ViT-B bf16 batch 2 <= {g['seconds']} s/iter and <= 6 GB: no ViT-B bf16 figure in this run")
    return lines


def fp16_sections(rows: List[dict]) -> List[str]:
    """One-line table: steps, finite losses, steps the GradScaler skipped, loss first -> last, final scale."""
    if not rows:
        return ["(no steps ran)"]
    finite = sum(r["finite"] for r in rows)
    skipped = [r["step"] for r in rows if r["skipped"]]
    return ["| steps | finite losses | steps the scaler skipped | total loss first -> last | final loss scale |",
            "| --- | --- | --- | --- | --- |",
            f"| {len(rows)} | {finite}/{len(rows)} | {len(skipped)} {skipped if skipped else ''} | "
            f"{rows[0]['total_loss']:.3f} -> {rows[-1]['total_loss']:.3f} | {rows[-1]['scale']:g} |"]


def inference_sections(rows: List[dict]) -> List[str]:
    """images/s per precision, then COCO evaluation seconds per evaluated set size."""
    lines = ["| precision | batch | images/s (eval forward + post-processing) |", "| --- | --- | --- |"]
    for r in (r for r in rows if r["kind"] == "inference"):
        value = f"{r['images_per_s']:.2f}" if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        lines.append(f"| {r['precision']} | {r['batch_size']} | {value} |")
    lines += ["", "| images evaluated | detections | COCO box-AP evaluation seconds |", "| --- | --- | --- |"]
    lines += [f"| {r['images']} | {r['detections']} | {r['seconds']:.2f} |" for r in rows if r["kind"] == "coco_eval"]
    return lines


SECTIONS = {"kernel": kernel_sections, "table2": table2_sections, "fp16": fp16_sections,
            "inference": inference_sections}


def render_markdown(report: dict) -> str:
    """report.md: header, then per part its title, status (with reason and time against its cap), notes, tables."""
    h = report["header"]
    lines = [f"# lazydet GPU report ({h['date']})", "",
             f"{h['device']}; torch {h['torch']}, triton {h['triton']}; commit {h['commit']}; recipe "
             f"{os.path.relpath(h['recipe'])} on random images {h['image_size'][0]}x{h['image_size'][1]}, batch "
             f"{h['batch_size']}, random init (timed recipe: {h['timed_recipe']}).", ""]
    for state in report["parts"]:
        lines += [f"## {state.get('title', state['name'])}", "", _status(state), ""]
        lines += [f"- {n}" for n in state.get("notes", [])] + ([""] if state.get("notes") else [])
        render = SECTIONS.get(state["name"])
        if render is not None and state.get("rows"):
            try:
                lines += render(state["rows"])
            except (KeyError, TypeError, ValueError) as e:
                lines.append(f"(rows not renderable: {type(e).__name__}: {e}; see report.json)")
            lines.append("")
    return "\n".join(lines) + "\n"


def plot_report(report: dict, path: str) -> Optional[str]:
    """Kernel fwd+bwd ms and peak MiB per row, and the fp16 loss per step with skipped steps marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = {s["name"]: s for s in report["parts"]}
    kernel = [r for r in parts.get("kernel", {}).get("rows", []) if r.get("kind") == "timing" and r["status"] == "ok"]
    fp16 = parts.get("fp16", {}).get("rows", [])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    labels = [f"{r['case']}\n{r['precision']}\n{r['impl']}" for r in kernel]
    colors = ["tab:blue" if r["impl"] == "pytorch" else "tab:orange" for r in kernel]
    axes[0].bar(range(len(kernel)), [r["ms_median"] for r in kernel], color=colors)
    axes[0].set_title("deformable attention fwd+bwd (ms, median)")
    axes[1].bar(range(len(kernel)), [r["peak_mib"] or 0 for r in kernel], color=colors)
    axes[1].set_title("peak MiB above inputs (CUDA only)")
    for ax in axes[:2]:
        ax.set_xticks(range(len(kernel)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    if fp16:
        axes[2].plot([r["step"] for r in fp16], [r["total_loss"] for r in fp16], marker=".")
        skipped = [r for r in fp16 if r["skipped"]]
        axes[2].scatter([r["step"] for r in skipped], [r["total_loss"] for r in skipped], color="red", zorder=3,
                        label=f"scaler skipped ({len(skipped)})")
        axes[2].legend()
    axes[2].set_title("fp16 + GradScaler: total loss per step")
    axes[2].set_xlabel("step")
    fig.suptitle(f"{report['header']['device']}, commit {report['header']['commit']}", fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: str) -> dict:
    """(Re)write report.md, report.json, report.png and table2/*; returns their paths."""
    paths = {k: os.path.join(out_dir, f"report.{k}") for k in ("md", "json", "png")}
    atomic_write_text(paths["md"], render_markdown(report))
    atomic_write_json(paths["json"], report)
    plot_report(report, paths["png"])
    table2 = next((s for s in report["parts"] if s["name"] == "table2" and s.get("rows")), None)
    if table2 is not None:
        write_outputs(table2_results(table2["rows"]), os.path.join(out_dir, "table2"), "Table 2, " +
                      report["header"]["device"])
    return paths
