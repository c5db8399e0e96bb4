"""The one-shot GPU report (`python -m tools.gpu_report`): what it runs, at which sizes, under which caps.

`prepare_recipe` rewrites the recipe to train on random images at its largest training size with random
init (no dataset, no weights download) and saves it as `recipe.yaml` in the output folder; the four
parts (`kernel_bench.run`, `gpu_parts.precision_table`, `gpu_parts.fp16_scaler`,
`gpu_parts.inference_and_eval`) then run one by one in their own processes (`part_runner`), and after
each one `gpu_report_render.write_report` rewrites report.md / report.json / report.png.

Two presets: `GPU_SETTINGS` (the COCO ViT-B recipe at 800 x 1333, batch 2, within 5 minutes of one GPU)
and `TINY_SETTINGS` (the quickstart recipe at 56 x 70 on the CPU: the same code end to end, in tests).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from .part_runner import Part, run_parts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COCO_B_RECIPE = os.path.join(REPO, "projects/dino_dinov2/configs/COCO/dino_dinov2_b_12ep.py")
QUICKSTART_RECIPE = os.path.join(REPO, "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py")
VIT_S, VIT_B = "vit_small_patch14_dinov2.lvd142m", "vit_base_patch14_dinov2.lvd142m"
PART_NAMES = ("kernel", "table2", "fp16", "inference")


@dataclass
class ReportSettings:
    """Everything the report's parts are told. `image_size` None = the recipe's largest training size;
    `caps` are seconds per part (their sum is the report's whole budget)."""

    config_file: str
    device: str
    batch_size: int = 2
    image_size: Optional[Tuple[int, int]] = None
    backbones: Tuple[str, ...] = (VIT_B, VIT_S)  # the goal's ViT-B first, in case the budget runs short
    precisions: Tuple[str, ...] = ("fp32", "bf16", "fp16")
    kernel_iters: int = 10
    kernel_warmup: int = 3
    table_iters: int = 8
    table_warmup: int = 2
    fp16_steps: int = 50
    inference_iters: int = 5
    inference_warmup: int = 2
    eval_images: int = 20
    eval_copies: int = 250  # 20 images x 250 = 5000, the size of COCO val2017
    threads: Optional[int] = None
    caps: Dict[str, float] = field(default_factory=lambda: {"kernel": 60, "table2": 140, "fp16": 40,
                                                            "inference": 60})


GPU_SETTINGS = ReportSettings(config_file=COCO_B_RECIPE, device="cuda")
TINY_SETTINGS = ReportSettings(
    config_file=QUICKSTART_RECIPE, device="cpu", image_size=(56, 70), backbones=("recipe",), precisions=("fp32", "fp16"),
    kernel_iters=2,
    kernel_warmup=1, table_iters=1, table_warmup=1, fp16_steps=2, inference_iters=1, inference_warmup=0,
    eval_images=4, eval_copies=3, threads=1, caps={"kernel": 120, "table2": 180, "fp16": 120, "inference": 120})


def settings_for(tiny: bool, config_file: Optional[str] = None, device: Optional[str] = None,
                 caps: Optional[Dict[str, float]] = None) -> ReportSettings:
    """A preset with the command line's changes; unknown part names in `caps` are a one-line error."""
    base = TINY_SETTINGS if tiny else GPU_SETTINGS
    unknown = set(caps or {}) - set(PART_NAMES)
    if unknown:
        raise ValueError(f"--cap: unknown part(s) {sorted(unknown)}; the parts are {', '.join(PART_NAMES)}")
    return replace(base, config_file=config_file or base.config_file, device=device or base.device,
                   caps={**base.caps, **(caps or {})})


def prepare_recipe(settings: ReportSettings, out_dir: str) -> Tuple[str, Tuple[int, int]]:
    """Save the recipe on random images (and random init) as out_dir/recipe.yaml; returns it and (h, w)."""
    from lazydet.config import LazyConfig

    from .random_batches import train_image_size, with_random_images

    cfg = LazyConfig.load(settings.config_file)
    size = tuple(settings.image_size) if settings.image_size else train_image_size(cfg)
    with_random_images(cfg, size)
    path = os.path.join(out_dir, "recipe.yaml")
    LazyConfig.save(cfg, path)
    return path, size


def report_parts(s: ReportSettings, recipe: str, size: Tuple[int, int]) -> List[Part]:
    """The four parts, in the order they run."""
    common = dict(config_file=recipe, device=s.device, batch_size=s.batch_size)
    cell_timeout = s.caps["table2"] / max(1, len(s.backbones) * len(s.precisions)) * 2
    return [
        Part("kernel", "lazydet.analysis.kernel_bench:run", s.caps["kernel"], dict(
            common, image_size=list(size), iters=s.kernel_iters, warmup=s.kernel_warmup),
            "1. Multi-scale deformable attention: Triton kernel vs PyTorch path"),
        Part("table2", "lazydet.analysis.gpu_parts:precision_table", s.caps["table2"], dict(
            common, backbones=list(s.backbones), precisions=list(s.precisions), iters=s.table_iters,
            warmup=s.table_warmup, cell_timeout_s=cell_timeout, threads=s.threads),
            "2. Table 2: time per iteration and memory per backbone and precision"),
        Part("fp16", "lazydet.analysis.gpu_parts:fp16_scaler", s.caps["fp16"], dict(common, steps=s.fp16_steps),
             f"3. {s.fp16_steps} fp16 iterations with the GradScaler"),
        Part("inference", "lazydet.analysis.gpu_parts:inference_and_eval", s.caps["inference"], dict(
            common, precisions=["fp32", "bf16"], iters=s.inference_iters, warmup=s.inference_warmup,
            eval_images=s.eval_images, eval_copies=s.eval_copies),
            "4. Inference images/s and COCO evaluation time"),
    ]


def run_report(settings: ReportSettings, out_dir: str, parts: Optional[List[Part]] = None, log=print) -> dict:
    """Run the parts (default `report_parts`) and keep out_dir/report.{md,json,png} current after each one;
    returns the final report dict (also in report.json)."""
    from .gpu_report_render import describe_environment, write_report

    os.makedirs(out_dir, exist_ok=True)
    recipe, size = prepare_recipe(settings, out_dir)
    header = describe_environment(settings, recipe, size)
    parts = report_parts(settings, recipe, size) if parts is None else parts
    report = {"header": header, "parts": []}

    def update(states):
        """After each part: the report with every part so far, rewritten on disk."""
        report["parts"] = list(states)
        write_report(report, out_dir)

    write_report(report, out_dir)
    run_parts(parts, out_dir, on_part_done=update, log=log)
    return report
