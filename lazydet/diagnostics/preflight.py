"""Preflight, once at the start: batch and lr against the recipe's reference, the parameter audit table,
pretrained-weight load coverage, and ground truth scored as predictions through the real evaluation path."""
from __future__ import annotations

import logging
import os
import tempfile
from collections import defaultdict

import torch
from omegaconf import OmegaConf
from torch import nn

from lazydet.utils import comm

from .checks_params import param_group_index
from .findings import DoctorReport, Finding

logger = logging.getLogger("lazydet.doctor")


def check_batch_and_lr(total_batch: int | None, lr: float | None, ref_batch: int | None, ref_lr: float | None,
                       tolerance: float = 1.5) -> tuple[str, Finding | None]:
    """A line for the report, and a finding when lr/batch strays from the reference by more than `tolerance`x."""
    line = f"effective total batch {total_batch}, base lr {lr}"
    if None in (total_batch, lr, ref_batch, ref_lr):
        return line + " (no reference set: train.doctor.preflight.reference_*)", None
    suggested = ref_lr * total_batch / ref_batch
    line += f"; reference batch {ref_batch} at lr {ref_lr:g} -> linear scaling suggests lr {suggested:.3g}"
    ratio = lr / suggested if suggested else float("inf")
    if ratio > tolerance or ratio < 1 / tolerance:
        return line, Finding("batch_lr_mismatch", "warning",
                             f"lr {lr:g} at total batch {total_batch} is {ratio:.2g}x the linearly scaled reference "
                             f"({ref_lr:g} at batch {ref_batch}); suggested lr {suggested:.3g} (AdamW recipes "
                             f"often use sqrt scaling instead: {ref_lr * (total_batch / ref_batch) ** 0.5:.3g})",
                             data={"suggested_lr": suggested})
    return line, None


def parameter_audit(model: nn.Module, optimizers, depth: int = 2) -> str:
    """Markdown table: per module (to `depth`), trainable and frozen parameter counts, and group lrs."""
    index = param_group_index(model, optimizers)
    opts = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
    rows: dict[str, dict] = defaultdict(lambda: {"trainable": 0, "frozen": 0, "lrs": set(), "no_opt": 0})
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0] if "." in name else ""
        row = rows[".".join(module.split(".")[:depth])]
        row["trainable" if p.requires_grad else "frozen"] += p.numel()
        for oi, gi in index[name]:
            g = opts[oi].param_groups[gi]
            base = g.get("initial_lr", g["lr"])
            notes = ([f"now {g['lr']:.2e}"] if g["lr"] != base else []) + (
                [f"wd {g['weight_decay']:g}"] if g.get("weight_decay") else [])
            row["lrs"].add(f"{base:.2e}" + (f" ({', '.join(notes)})" if notes else ""))
        if p.requires_grad and not index[name]:
            row["no_opt"] += p.numel()
    lines = ["| module | trainable | frozen | not in optimizer | lr per group |", "|---|---:|---:|---:|---|"]
    for mod, r in rows.items():
        lines.append(f"| {mod or '<root>'} | {r['trainable']:,} | {r['frozen']:,} | {r['no_opt']:,} | "
                     f"{', '.join(sorted(r['lrs'])) or '-'} |")
    total_t = sum(r["trainable"] for r in rows.values())
    total_f = sum(r["frozen"] for r in rows.values())
    lines.append(f"| **total** | {total_t:,} | {total_f:,} | {sum(r['no_opt'] for r in rows.values()):,} | |")
    return "\n".join(lines)


def check_load_coverage(report, min_coverage: float = 0.9) -> tuple[str, Finding | None]:
    """Coverage of the checkpointer's `last_load_report` within the module it was loaded into."""
    if report is None:
        return "no pretrained weights loaded", None
    n_target = report.num_model_keys
    if getattr(report, "prefix", ""):
        n_target = sum(1 for k in report.matched + report.missing if k.startswith(report.prefix)) or n_target
    cov = len(report.matched) / max(n_target, 1)
    where = f" into '{report.prefix}'" if getattr(report, "prefix", "") else ""
    line = (f"{report.source}{where}: {len(report.matched)}/{n_target} tensors loaded ({100 * cov:.1f}%), "
            f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, "
            f"{len(report.shape_mismatched)} shape-mismatched")
    if cov < min_coverage:
        return line, Finding("pretrained_coverage", "warning", line + f" (< {100 * min_coverage:.0f}%); "
                             f"e.g. missing {report.missing[:3]}, unexpected {report.unexpected[:3]}")
    return line, None


class GroundTruthAsPredictions(nn.Module):
    """A 'model' that answers every image with its own targets (score 1), in the eval output format."""

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))  # gives the loop a device to move batches to

    def forward(self, batch):
        """`batch["targets"]` (cxcywh normalised boxes) -> per image `{boxes [n, 4] xyxy in orig_size pixels,
        scores [n] all 1, labels [n]}`: what a perfect detector returns."""
        out = []
        for t in batch["targets"]:
            h, w = (float(x) for x in t["orig_size"])
            cx, cy, bw, bh = t["boxes"].float().unbind(-1)
            boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            boxes = boxes * boxes.new_tensor([w, h, w, h])
            out.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": t["labels"].long()})
        return out


def _sample_dataset(name: str, image_ids: list[int], out_dir: str) -> str:
    """Registers `<name>__doctor_sample`: the metadata of `name` with a json holding only `image_ids`."""
    import json

    from lazydet.data import MetadataCatalog, ensure_category_metadata

    meta = ensure_category_metadata(name).as_dict()
    with open(meta["json_file"]) as f:
        gt = json.load(f)
    keep = set(image_ids)
    gt["images"] = [im for im in gt["images"] if im["id"] in keep]
    gt["annotations"] = [a for a in gt.get("annotations", []) if a["image_id"] in keep]
    path = os.path.join(out_dir, "gt_sample.json")
    with open(path, "w") as f:
        json.dump(gt, f)
    sample = f"{name}__doctor_sample"
    MetadataCatalog.remove(sample)
    MetadataCatalog.get(sample).set(**{k: v for k, v in meta.items() if k not in ("name", "json_file")},
                                    json_file=path)
    return sample


def gt_eval(cfg, num_images: int) -> dict:
    """Scores the ground truth of the first `num_images` validation images as predictions, through the
    recipe's test loader (`cfg.dataloader.test`), `inference_on_dataset` and its evaluator class: anything
    below AP 100 means the data or evaluation path is broken. The evaluator scores against a json holding
    only the sampled images."""
    from lazydet.config import instantiate, locate
    from lazydet.evaluation import inference_on_dataset

    test = cfg.dataloader.test
    records = list(instantiate(test.dataset))[:num_images]
    names = test.dataset.names
    name = names if isinstance(names, str) else list(names)[0]
    target = locate(test._target_) if isinstance(test._target_, str) else test._target_
    kwargs = {k: instantiate(test[k]) for k in test if k not in ("_target_", "dataset")}
    kwargs["num_workers"] = 0
    loader = target(dataset=records, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        ev = cfg.dataloader.evaluator
        ev_target = locate(ev._target_) if isinstance(ev._target_, str) else ev._target_
        ev_kwargs = {k: instantiate(ev[k]) for k in ev if k not in ("_target_", "dataset_name", "output_dir")}
        evaluator = ev_target(dataset_name=_sample_dataset(name, [r["image_id"] for r in records], tmp),
                              output_dir=None, **ev_kwargs)
        return inference_on_dataset(GroundTruthAsPredictions().eval(), loader, evaluator)


def run_preflight(trainer, settings: dict, report: DoctorReport, cfg=None) -> None:
    """All preflight checks; each adds its table/lines to the report's 'Preflight' section."""
    cfg = cfg if cfg is not None else getattr(trainer, "cfg", None)
    if cfg is None:
        cfg = OmegaConf.create()  # no recipe (unit tests): nothing to read from it
    model = getattr(trainer.model, "module", trainer.model)
    lines = []
    loader = getattr(trainer, "data_loader", None)
    total_batch = (getattr(loader, "total_batch_size", None)
                   or OmegaConf.select(cfg, "dataloader.train.total_batch_size"))
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if lr is None and trainer.optimizer is not None:
        lr = max(g.get("initial_lr", g["lr"]) for g in trainer.optimizer.param_groups)
    line, finding = check_batch_and_lr(total_batch, lr, settings["reference_total_batch_size"],
                                       settings["reference_lr"], settings["lr_tolerance"])
    lines.append(f"- Batch and lr: {line}")
    if finding:
        report.add(finding)
    checkpointer = getattr(trainer, "checkpointer", None)
    line, finding = check_load_coverage(getattr(checkpointer, "last_load_report", None),
                                        settings["min_load_coverage"])
    lines.append(f"- Pretrained weights: {line}")
    if finding:
        report.add(finding)
    if settings["gt_eval_images"] and OmegaConf.select(cfg, "dataloader.evaluator") is not None:
        try:
            # collective (every rank evaluates its shard); the evaluator's result lives on the main process
            res = comm.broadcast_object(gt_eval(cfg, settings["gt_eval_images"]))
            ap = res.get("bbox/AP")
            lines.append(f"- Ground truth as predictions on {settings['gt_eval_images']} val images: bbox/AP {ap}")
            if ap is None or ap < 99.9:
                report.add(Finding("gt_eval_not_perfect", "error",
                                   f"bbox/AP {ap} (AP50 {res.get('bbox/AP50')}) with ground truth as predictions "
                                   f"on {settings['gt_eval_images']} val images; expected 100"))
        except Exception as e:  # the preflight must not kill a run; say why it could not check
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            lines.append(f"- Ground truth as predictions: could not run ({why})")
            logger.warning(f"[doctor] ground-truth evaluation skipped: {why}")
    lines += ["", "Parameter audit (base lr of each group; 'now': the lr of the first step, when the schedule "
              "scales it):", "",
              parameter_audit(model, trainer.optimizer, settings["audit_depth"])]
    report.sections["Preflight"] = "\n".join(lines)
    logger.info("[doctor] preflight:\n" + "\n".join(lines))
