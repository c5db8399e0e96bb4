"""What the doctor finds, and where it goes: the catalogue of findings, rate-limited logging, the report.

Every check returns `Finding`s carrying only its evidence; the likely causes and what to try come from
one catalogue (`CATALOG`), so the log, the event storage, `doctor_report.md` and docs/doctor.md agree.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from lazydet.checkpoint.atomic import atomic_write_text

logger = logging.getLogger("lazydet.doctor")

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Diagnosis:
    """What a finding means, for the report: a `title`, its likely `causes` and the `actions` to try."""

    title: str
    causes: tuple[str, ...]
    actions: tuple[str, ...]


CATALOG: dict[str, Diagnosis] = {
    "non_finite_loss": Diagnosis(
        "A loss term is NaN or inf",
        ("learning rate too high (the weights blew up on an earlier step)",
         "a bad sample: degenerate or non-finite boxes, an empty/corrupt image",
         "fp16 overflow (logits, attention) or a log/div of zero in a loss"),
        ("lower the lr or lengthen warm-up; enable train.clip_grad",
         "inspect the recorded image ids with tools/visualize_data",
         "try amp.dtype=bfloat16 or amp.enabled=False")),
    "non_finite_grad": Diagnosis(
        "Gradients are NaN or inf while the loss is finite",
        ("an op whose backward is unstable (sqrt/log at 0, division by a tiny norm)",
         "fp16 overflow in the backward pass that the GradScaler keeps hitting"),
        ("look at the named parameters: the first module upstream of them is the culprit",
         "enable gradient clipping, use bfloat16, or lower the lr")),
    "divergence": Diagnosis(
        "The loss is climbing well above its minimum",
        ("learning rate too high for the optimizer and backbone", "warm-up too short",
         "gradient clipping disabled"),
        ("divide the lr by 3-10 (tools/lr_find suggests one)", "lengthen the warm-up",
         "enable train.clip_grad (max_norm 0.1 is the DINO default)")),
    "grad_explosion": Diagnosis(
        "The gradient norm jumped far above its usual level",
        ("learning rate too high", "a bad batch", "fp16 overflow"),
        ("enable or tighten train.clip_grad", "lower the lr", "check the data of those iterations")),
    "no_learning": Diagnosis(
        "The training loss is not falling after the warm-up",
        ("lr far too low, zero, or a schedule that already decayed",
         "the trainable part is disconnected from the loss or excluded from the optimizer",
         "labels or boxes inconsistent with the images (wrong format, shuffled targets)"),
        ("run tools/overfit_batch: if one batch cannot be fitted, it is a bug, not a hyperparameter",
         "check the parameter audit table and the lr each group really gets",
         "run tools/lr_find")),
    "metric_at_chance": Diagnosis(
        "Evaluation metric stays at chance level over several evaluations",
        ("boxes in the wrong format (xyxy vs cxcywh) or wrong scale",
         "class ids shifted against the evaluator's category mapping",
         "evaluation on other weights than the trained ones (EMA not updated, wrong checkpoint)"),
        ("read the ground-truth-as-predictions preflight result: below AP 100 the data/eval path is broken",
         "run tools/overfit_batch", "visualise a few training targets (tools/visualize_data)")),
    "noisy_flat": Diagnosis(
        "The training loss is noisy while the validation metric/loss does not move",
        ("learning rate too high for the optimizer and backbone", "total batch too small",
         "evaluation not on the trained weights"),
        ("lower the lr (or the backbone's lr multiplier)", "increase the batch or accumulate gradients",
         "check which weights the evaluator uses")),
    "params_without_grad": Diagnosis(
        "Trainable parameters receive no gradient",
        ("the module is not used in forward, or its output is detached",
         "a branch only used at inference (or only with some inputs)"),
        ("freeze or delete them (requires_grad=False), or fix the forward path",
         "if the branch is conditional, ignore this (settings: doctor.ignore_params)")),
    "params_not_in_optimizer": Diagnosis(
        "Trainable parameters are in no optimizer param group",
        ("the param-group builder filters by name and misses a module (e.g. the head)",
         "a second optimizer meant for them is never stepped"),
        ("fix the optimizer's params= (lazydet.solver.get_default_optimizer_params)",)),
    "params_in_two_groups": Diagnosis(
        "Parameters appear in two optimizer groups or two optimizers",
        ("overlapping name filters in the param-group builder",),
        ("make the groups disjoint; each parameter must get exactly one lr",)),
    "frozen_in_optimizer": Diagnosis(
        "Frozen parameters (requires_grad=False) sit in the optimizer",
        ("the module was frozen after building the optimizer, or by mistake",),
        ("decide: unfreeze it, or drop it from the optimizer",)),
    "unexpected_frozen": Diagnosis(
        "A module outside the expected-frozen set is completely frozen",
        ("a freeze meant for the backbone matched too much (e.g. a name pattern)",
         "requires_grad_(False) left over from a fine-tuning script"),
        ("unfreeze it, or list it in train.doctor.expected_frozen if it is intended",)),
    "params_never_change": Diagnosis(
        "Trainable parameters in the optimizer never changed",
        ("their group's lr is 0 (multiplier 0, scheduler at 0)", "their gradient is always zero"),
        ("check the lr of their group in the audit table", "check that the loss depends on them")),
    "update_ratio_high": Diagnosis(
        "Update/weight ratio far above the usual range (~1e-4..1e-2 per step)",
        ("learning rate too high for this group",),
        ("lower the lr or the group's lr multiplier",)),
    "update_ratio_low": Diagnosis(
        "Update/weight ratio far below the usual range (~1e-4..1e-2 per step)",
        ("learning rate too low or zero for this group", "gradients vanish in this group"),
        ("raise the lr or the group's lr multiplier; check the schedule",)),
    "boxes_look_xyxy": Diagnosis(
        "Target boxes look like xyxy corners, but cxcywh is expected",
        ("the dataset/mapper writes (x0, y0, x1, y1) where the model expects (cx, cy, w, h)",),
        ("convert with torchvision.ops.box_convert(boxes, 'xyxy', 'cxcywh') in the mapper",)),
    "boxes_not_normalised": Diagnosis(
        "Target box coordinates exceed 1: boxes are in pixels, not normalised by the image size",
        ("the mapper forgot to divide by the (transformed) image width/height",),
        ("divide cx, w by the width and cy, h by the height of 'size'",)),
    "boxes_outside_image": Diagnosis(
        "Target boxes extend outside the image",
        ("boxes not clipped after a crop/resize transform", "wrong box format"),
        ("clip boxes in the mapper (torchvision.transforms.v2.ClampBoundingBoxes)",)),
    "boxes_degenerate": Diagnosis(
        "Target boxes with zero or negative width/height, or non-finite values",
        ("annotations with zero area", "boxes cropped away by an augmentation"),
        ("filter them in the mapper (torchvision.transforms.v2.SanitizeBoundingBoxes)",)),
    "labels_out_of_range": Diagnosis(
        "Class ids outside 0..num_classes-1",
        ("model.num_classes too small (DINO treats id == num_classes as 'no object')",
         "dataset ids not mapped to contiguous ids"),
        ("set model.num_classes to the number of dataset classes",
         "map ids through MetadataCatalog thing_dataset_id_to_contiguous_id")),
    "empty_targets": Diagnosis(
        "Many training images have no boxes",
        ("a filter or crop removes all objects", "a wrong category mapping drops annotations"),
        ("check the mapper/filters; set filter_empty=True in the dataset if intended",)),
    "class_imbalance": Diagnosis(
        "Strong class imbalance in the sampled batches",
        ("the dataset is long-tailed (normal for LVIS/COCO-like data)", "a category mapping merges classes"),
        ("consider repeat-factor sampling; check AP per category",)),
    "inputs_not_normalised": Diagnosis(
        "The backbone's input is far from mean 0 / std 1",
        ("pixel_mean/pixel_std on the wrong scale (0..1 vs 0..255) or missing",
         "images already normalised by the mapper, then again by the model"),
        ("set model.pixel_mean/pixel_std on the 0..255 scale (ImageNet: 123.675,116.28,103.53 / "
         "58.395,57.12,57.375)",)),
    "batch_lr_mismatch": Diagnosis(
        "The effective total batch and lr do not follow the recipe's reference",
        ("the batch changed (fewer GPUs, per-GPU batch) but the lr did not",),
        ("scale the lr linearly with the total batch (the suggested lr), or keep the reference batch",)),
    "pretrained_coverage": Diagnosis(
        "Pretrained weights cover only part of the model they were meant for",
        ("the checkpoint's key names do not match (prefix, timm vs hub naming)",
         "a different model size or patch size"),
        ("read the missing/unexpected keys in the report; fix the key mapping",)),
    "gt_eval_not_perfect": Diagnosis(
        "Ground truth fed as predictions does not score AP 100",
        ("box format or scale mismatch between mapper and evaluator",
         "contiguous/dataset category ids mapped wrongly", "orig_size vs size confusion"),
        ("the data or evaluation path is broken, not the model: fix it before training",)),
    "early_stopped": Diagnosis(
        "Early stopping: the validation metric stopped improving",
        ("the run converged, or it overfits",),
        ("use the best checkpoint; lower the lr or add augmentation if it overfits",)),
}


@dataclass
class Finding:
    """One problem: its name in CATALOG, how bad, and the evidence (numbers, iterations, names)."""

    name: str
    severity: str
    evidence: str
    iteration: int | None = None
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in CATALOG:
            raise ValueError(f"unknown doctor finding {self.name!r}; known: {sorted(CATALOG)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def diagnosis(self) -> Diagnosis:
        """The catalogue entry for this finding's name (title, causes, actions)."""
        return CATALOG[self.name]

    def one_line(self) -> str:
        """The log line: `[doctor] SEVERITY name (iter i): evidence`."""
        at = f" (iter {self.iteration})" if self.iteration is not None else ""
        return f"[doctor] {self.severity.upper()} {self.name}{at}: {self.evidence}"

    def to_markdown(self) -> str:
        """The report section: title, evidence, likely causes and what to try, as Markdown."""
        d = self.diagnosis
        at = f", iteration {self.iteration}" if self.iteration is not None else ""
        lines = [f"### {self.severity.upper()}: {d.title} (`{self.name}`{at})", "",
                 f"**Evidence:** {self.evidence}", "", "**Likely causes:**"]
        lines += [f"- {c}" for c in d.causes]
        lines += ["", "**What to try:**"]
        lines += [f"- {a}" for a in d.actions]
        return "\n".join(lines) + "\n"


class DoctorReport:
    """Collects findings: logs each name at most once per `log_every_s`, counts repeats, writes the report."""

    def __init__(self, log_every_s: float = 300.0, storage=None, log: bool = True):
        self.log_every_s = log_every_s
        self.log = log
        self.storage = storage
        self.findings: dict[str, Finding] = {}  # first occurrence per name
        self.counts: dict[str, int] = {}
        self.last_iteration: dict[str, int | None] = {}
        self._last_logged: dict[str, float] = {}
        self.sections: dict[str, str] = {}  # preflight tables etc., markdown
        self.stop_reason: str | None = None

    def add(self, finding: Finding) -> bool:
        """Record `finding`; returns True when it was logged now (first time, or after the rate limit)."""
        name = finding.name
        self.findings.setdefault(name, finding)
        self.counts[name] = self.counts.get(name, 0) + 1
        self.last_iteration[name] = finding.iteration
        self._put_storage(finding)
        now = time.monotonic()
        if not self.log:
            return False
        if name in self._last_logged and now - self._last_logged[name] < self.log_every_s:
            return False
        self._last_logged[name] = now
        log = logger.error if finding.severity == "error" else (
            logger.warning if finding.severity == "warning" else logger.info)
        log(finding.one_line())
        return True

    def extend(self, findings) -> None:
        """`add` each of `findings` in order."""
        for f in findings:
            self.add(f)

    def _put_storage(self, finding: Finding) -> None:
        if self.storage is None or not hasattr(self.storage, "put_scalar"):
            return
        try:
            self.storage.put_scalar(f"doctor/{finding.name}", float(self.counts[finding.name]),
                                    smoothing_hint=False)
        except TypeError:
            self.storage.put_scalar(f"doctor/{finding.name}", float(self.counts[finding.name]))

    def problems(self, min_severity: str = "warning") -> list[Finding]:
        """The first occurrence of every finding at least as severe as `min_severity` ("error" < "warning" <
        "info" in rank: "warning" returns errors and warnings)."""
        rank = SEVERITIES.index(min_severity)
        return [f for f in self.findings.values() if SEVERITIES.index(f.severity) <= rank]

    def to_markdown(self) -> str:
        """The whole report: the stop reason if any, counts per severity, every finding (errors first) with how
        often it repeated, then the extra sections (preflight tables, ...)."""
        order = sorted(self.findings.values(), key=lambda f: SEVERITIES.index(f.severity))
        out = ["# Training doctor report", ""]
        if self.stop_reason:
            out += [f"**Training stopped:** {self.stop_reason}", ""]
        n_err = sum(f.severity == "error" for f in order)
        n_warn = sum(f.severity == "warning" for f in order)
        out += [f"{n_err} error(s), {n_warn} warning(s), {len(order) - n_err - n_warn} note(s)."
                if order else "No problems found.", ""]
        for f in order:
            out.append(f.to_markdown())
            if self.counts[f.name] > 1:
                out.append(f"_Seen {self.counts[f.name]} times, last at iteration "
                           f"{self.last_iteration[f.name]}._\n")
        for title, body in self.sections.items():
            out += [f"## {title}", "", body.rstrip(), ""]
        return "\n".join(out).rstrip() + "\n"

    def write(self, output_dir: str, filename: str = "doctor_report.md") -> str:
        """Writes `to_markdown()` to `output_dir/filename` (created if needed) atomically, so a reader never
        sees half a report; returns the path."""
        path = os.path.join(output_dir, filename)
        atomic_write_text(path, self.to_markdown())
        return path
