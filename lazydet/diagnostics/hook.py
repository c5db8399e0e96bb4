"""DoctorHook: runs the checks while training, stops before a non-finite step, writes doctor_report.md.

Cost per iteration: two small device syncs in `after_backward` (the loss terms and the per-tensor gradient
norms, needed anyway to stop *before* the optimizer step); everything else runs every `check_period`
iterations or only during the first few.
"""
from __future__ import annotations

import logging
import math
import sys

from lazydet.engine import HookBase, StopTraining

from . import checks_loss as L
from .checks_data import DataSample, InputStatsRecorder, non_finite_samples
from .checks_params import (GradPresence, ParamFingerprint, UpdateRatioProbe, check_optimizer_coverage,
                            check_unexpected_frozen, check_update_ratios, grad_health, group_names,
                            param_group_index)
from .findings import DoctorReport, Finding
from .settings import merge_settings

logger = logging.getLogger("lazydet.doctor")


def _unwrap(model):
    return getattr(model, "module", model)


def _image_ids(batch) -> list:
    try:
        return [t.get("image_id") for t in batch["targets"]]
    except (TypeError, KeyError, AttributeError):
        return []


def storage_series(storage, name: str) -> list[tuple[int, float]]:
    """`storage.history(name)` as (iteration, value) pairs; empty when the metric was never put."""
    try:
        return [(int(it), float(v)) for v, it in storage.history(name).values()]
    except (KeyError, AttributeError):
        return []


class DoctorHook(HookBase):
    """The training doctor. `settings` is `train.doctor` (partial is fine; see settings.DEFAULTS);
    `lr_warmup_iters` is the lr schedule's warm-up (`LRMultiplier.warmup_iters`): the slope and update-ratio
    checks wait for the longer of it and `settings["warmup_iters"]`."""

    def __init__(self, settings=None, num_classes: int | None = None, cfg=None, lr_warmup_iters: int = 0):
        self.s = merge_settings(settings)
        if lr_warmup_iters > self.s["warmup_iters"]:
            logger.info(f"[doctor] warmup_iters raised to the lr schedule's {lr_warmup_iters}")
            self.s["warmup_iters"] = int(lr_warmup_iters)
        self.num_classes = num_classes
        self.cfg = cfg
        self.report = DoctorReport(log_every_s=self.s["log_every_s"])
        self.loss_series: list[tuple[int, float]] = []
        self.grad_series: list[tuple[int, float]] = []
        self.data = DataSample(outside_tol=self.s["data"]["outside_tol"])
        self._input_recorder = None
        self._probe = UpdateRatioProbe()
        self._probing = False
        self._fp16_overflows = 0
        self._data_done = False
        self._last_observed = None
        self._grad_done = False
        self._change_done = False

    # ----------------------------------------------------------------- lifecycle
    def before_train(self):
        """Start-up checks: optimizer coverage, unexpected frozen modules, input recorder, the preflight."""
        t = self.trainer
        self.report.storage = getattr(t, "storage", None)
        model = _unwrap(t.model)
        if self.num_classes is None:
            self.num_classes = getattr(model, "num_classes", None)
        p = self.s["params"]
        self._grad_presence = GradPresence(model, ignore=p["ignore"])
        self._fingerprint = ParamFingerprint(model, t.optimizer)
        self.report.extend(check_optimizer_coverage(model, t.optimizer, t.iter, ignore=p["ignore"]))
        frozen = check_unexpected_frozen(model, p["expected_frozen"], t.iter)
        if frozen:
            self.report.add(frozen)
        backbone = getattr(model, "backbone", None)
        if backbone is not None and self.s["data"]["sample_batches"] > 0:
            self._input_recorder = InputStatsRecorder(backbone, self.data)
        if self.s["preflight"]["enabled"]:
            from .preflight import run_preflight
            run_preflight(t, self.s["preflight"], self.report, self.cfg)

    def after_backward(self):
        """Record losses and gradient norm; stop before the optimizer step on a non-finite loss/gradient;
        start an update-ratio probe when due."""
        t = self.trainer
        it = t.iter
        model = _unwrap(t.model)
        losses = getattr(t, "last_loss_dict", None) or {}
        values = L.loss_values(losses)  # one device sync
        bad_terms = [k for k, v in values.items() if not math.isfinite(v)]
        gnorm, bad_params = grad_health(model)  # one more
        if values:
            self.loss_series.append((it, sum(values.values())))
        if math.isfinite(gnorm):
            self.grad_series.append((it, gnorm))
        if not self._data_done and getattr(t, "last_batch", None) is not None:
            self._observe(t.last_batch, model)
        if not self._grad_done:
            self._grad_presence.observe(model)
        if bad_terms or bad_params:
            self._non_finite(it, losses, bad_terms, bad_params)
            return
        self._fp16_overflows = 0  # only consecutive overflows count
        if self._probe_due(it):
            self._probe.before_step(t.optimizer)
            self._probing = True

    def after_step(self):
        """Finish probes and the first-iterations checks (data sample, gradient presence, parameter change),
        and run the series checks every `check_period` iterations."""
        t = self.trainer
        it = t.iter
        model = _unwrap(t.model)
        if self._probing:
            self._probing = False
            ratios = self._probe.after_step()
            if not getattr(t, "skip_step", False):
                self.report.extend(check_update_ratios(
                    ratios, group_names(model, t.optimizer), low=self.s["params"]["ratio_low"],
                    high=self.s["params"]["ratio_high"], iteration=it))
        if not self._data_done and it + 1 - t.start_iter >= self.s["data"]["sample_batches"]:
            self._finish_data_sample(it)
        if not self._grad_done and it + 1 - t.start_iter >= self.s["params"]["grad_check_iters"]:
            self._grad_done = True
            self._add(self._grad_presence.finding(model, it))
        if not self._change_done and it + 1 - t.start_iter >= self.s["params"]["change_check_iter"]:
            self._change_done = True
            self._add(self._fingerprint.finding(model, it, self._param_lrs()))
        if (it + 1) % self.s["check_period"] == 0:
            self.run_series_checks(it)

    def after_train(self):
        """Record a crash or stop reason, finish the data sample, and write doctor_report.md (main process)."""
        t = self.trainer
        crash = sys.exc_info()[1]  # set when the trainer's `finally` runs us while an error propagates
        if crash is not None and not isinstance(crash, StopTraining):
            self._crashed(crash)
        if not self._data_done and getattr(t, "last_batch", None) is not None:
            if t.last_batch is not self._last_observed:  # training died in this batch's forward
                self._observe(t.last_batch, _unwrap(t.model))
            self._finish_data_sample(t.iter)
        reason = getattr(t, "stop_reason", None)
        if reason:
            self.report.stop_reason = str(reason)
        if self._input_recorder is not None:
            self._input_recorder.remove()
            self._input_recorder = None
        from lazydet.utils import comm
        if comm.is_main_process() and getattr(t, "output_dir", None):
            path = self.report.write(t.output_dir, self.s["report_file"])
            logger.info(f"[doctor] report written to {path} "
                        f"({len(self.report.problems())} problem(s))")

    # ----------------------------------------------------------------- checks
    def run_series_checks(self, it):
        """The checks on the loss / gradient-norm / metric series so far (divergence, no learning, ...)."""
        storage = getattr(self.trainer, "storage", None)
        for finding in L.run_series_checks(self.loss_series, self.grad_series,
                                           storage_series(storage, self.s["eval"]["metric"]),
                                           storage_series(storage, "val/total_loss"), self.s):
            self._add(finding)

    def _observe(self, batch, model):
        self._last_observed = batch
        self.data.observe_batch(batch, model, inputs_from_hook=self._input_recorder is not None)

    def _finish_data_sample(self, it):
        self._data_done = True
        if self._input_recorder is not None:
            self._input_recorder.remove()
            self._input_recorder = None
        d = self.s["data"]
        self.report.extend(self.data.findings(
            self.num_classes, it, max_abs_mean=d["max_abs_input_mean"], std_range=tuple(d["input_std_range"]),
            empty_warn=d["empty_warn"], imbalance_ratio=d["imbalance_ratio"]))

    def _batch_note(self) -> tuple[list, str]:
        batch = getattr(self.trainer, "last_batch", None)
        ids = _image_ids(batch)
        culprits = non_finite_samples(batch) if isinstance(batch, dict) else []
        note = f"batch image ids: {ids}" + (f"; non-finite boxes/pixels in images {culprits}" if culprits else "")
        return ids, note

    def _crashed(self, exc: BaseException):
        """Training died with an error: a NaN/inf one (e.g. the matcher refusing NaN costs) is recorded as a
        non-finite loss with the batch's image ids; the step never ran, so no weight went non-finite."""
        msg = str(exc).splitlines()[0] if str(exc) else ""
        self.report.stop_reason = f"{type(exc).__name__} at iteration {self.trainer.iter}: {msg}"
        if isinstance(exc, FloatingPointError) or any(w in msg.lower() for w in ("nan", "inf")):
            _, note = self._batch_note()
            self.report.add(Finding("non_finite_loss", "error",
                                    f"{type(exc).__name__} raised in forward/backward at iteration "
                                    f"{self.trainer.iter} before the optimizer step: {msg}; {note}",
                                    self.trainer.iter, {"image_ids": _image_ids(self.trainer.last_batch)}))

    def _non_finite(self, it, losses, bad_terms, bad_params):
        t = self.trainer
        ids, note = self._batch_note()
        scaler = getattr(t, "grad_scaler", None)
        if not bad_terms and scaler is not None and getattr(scaler, "is_enabled", lambda: True)():
            # fp16: the GradScaler skips this step and lowers its scale; only a persistent overflow is a fault
            self._fp16_overflows += 1
            if self._fp16_overflows <= self.s["max_fp16_overflow_steps"]:
                return
        if bad_terms:
            finding = L.check_non_finite_loss(losses, it, ids, note)
            if bad_params:
                finding.evidence += f"; {len(bad_params)} tensors got non-finite gradients, e.g. {bad_params[:5]}"
                finding.data["params"] = bad_params
        else:
            finding = Finding("non_finite_grad", "error",
                              f"{len(bad_params)} tensors with non-finite gradients, e.g. {bad_params[:8]}; "
                              f"{note}", it, {"params": bad_params, "image_ids": ids})
        self._add(finding)
        t.skip_step = True
        if finding.name in self.s["stop_on"]:
            raise StopTraining(f"doctor: {finding.name} at iteration {it} (step skipped, weights finite)")

    def _add(self, finding):
        if finding is None:
            return
        self.report.add(finding)
        if finding.name in self.s["stop_on"] and finding.name not in ("non_finite_loss", "non_finite_grad"):
            raise StopTraining(f"doctor: {finding.name} at iteration {finding.iteration}: {finding.evidence}")

    def _probe_due(self, it):
        period = self.s["params"]["ratio_period"]
        return bool(period) and it >= self.s["warmup_iters"] and (it + 1) % period == 0

    def _param_lrs(self) -> dict[str, float]:
        model, opt = _unwrap(self.trainer.model), self.trainer.optimizer
        where = param_group_index(model, opt)
        groups = opt.param_groups if hasattr(opt, "param_groups") else []
        return {n: float(groups[w[0][1]]["lr"]) for n, w in where.items() if w and w[0][0] == 0 and groups}
