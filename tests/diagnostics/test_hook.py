"""DoctorHook, EarlyStopHook and ValLossHook through the real Trainer with a tiny model (seconds)."""
import logging
import math

import pytest
import torch
from torch import nn

from lazydet.diagnostics import build_doctor_hooks
from lazydet.diagnostics.early_stop import EarlyStopHook, EarlyStopper
from lazydet.diagnostics.findings import DoctorReport, Finding
from lazydet.diagnostics.hook import DoctorHook
from lazydet.diagnostics.settings import merge_settings
from lazydet.diagnostics.val_loss import ValLossHook
from lazydet.engine import HookBase, Trainer


class TinyDetector(nn.Module):
    """Predicts the mean target box from pooled pixels: enough to give contract-shaped batches a loss."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.register_buffer("pixel_mean", torch.full((3, 1, 1), 127.5))
        self.register_buffer("pixel_std", torch.full((3, 1, 1), 73.6))
        self.backbone = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 4)

    def forward(self, batch):
        x = (batch["images"].float() - self.pixel_mean) / self.pixel_std
        feats = self.backbone(x).mean(dim=(2, 3))
        pred = self.head(feats).sigmoid()
        target = torch.stack([t["boxes"].mean(0) for t in batch["targets"]])
        l1 = (pred - target).pow(2).mean()  # squared: a NaN target gives NaN gradients too
        return {"loss_bbox": l1, "loss_bbox_dn": 0.5 * l1}

    @staticmethod
    def is_training_only_loss(name):
        return name == "loss_bbox_dn"


def batches(n_images=2, seed=0, nan_at=None):
    g = torch.Generator().manual_seed(seed)
    i = 0
    while True:
        targets = []
        for k in range(n_images):
            boxes = torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]]) + 0.05 * torch.rand(2, 4, generator=g)
            if i == nan_at and k == 1:
                boxes[0, 0] = math.nan
            targets.append({"image_id": 10 * i + k, "labels": torch.tensor([0, 1]), "boxes": boxes,
                            "size": torch.tensor([16, 16]), "orig_size": torch.tensor([16, 16])})
        yield {"images": torch.randint(0, 256, (n_images, 3, 16, 16), dtype=torch.uint8, generator=g),
               "pixel_mask": torch.ones(n_images, 16, 16, dtype=torch.bool), "targets": targets}
        i += 1


class Loader:
    def __init__(self, **kw):
        self.kw = kw
        self.total_batch_size = 2

    def __iter__(self):
        return batches(**self.kw)


def make_trainer(tmp_path, max_iter=8, lr=0.01, **loader_kw):
    torch.manual_seed(0)
    model = TinyDetector()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return Trainer(model, Loader(**loader_kw), opt, max_iter=max_iter, device="cpu", output_dir=str(tmp_path))


FAST = dict(preflight=dict(gt_eval_images=0), data=dict(sample_batches=2),
            params=dict(grad_check_iters=2, change_check_iter=2, ratio_period=0))


def test_nan_loss_stops_before_the_step_naming_terms_params_and_images(tmp_path):
    trainer = make_trainer(tmp_path, nan_at=3)
    weights = {}

    class Snapshot(HookBase):
        def after_step(self):
            weights[self.trainer.iter] = [p.detach().clone() for p in self.trainer.model.parameters()]

    doctor = DoctorHook(FAST)
    trainer.register_hooks([Snapshot(), doctor])
    trainer.train()
    assert trainer.stop_reason.startswith("doctor: non_finite_loss at iteration 3")
    f = doctor.report.findings["non_finite_loss"]
    assert set(f.data["terms"]) == {"loss_bbox", "loss_bbox_dn"} and f.data["image_ids"] == [30, 31]
    assert "non-finite boxes/pixels in images [31]" in f.evidence and "head.weight" in f.evidence
    # the step of iteration 3 never ran: the weights are those after iteration 2, all finite
    for a, b in zip(weights[2], trainer.model.parameters()):
        assert torch.equal(a, b) and bool(torch.isfinite(b).all())
    text = (tmp_path / "doctor_report.md").read_text()
    assert "**Training stopped:** doctor: non_finite_loss" in text and "[30, 31]" in text


def test_non_finite_not_in_stop_on_skips_the_step_and_goes_on(tmp_path):
    trainer = make_trainer(tmp_path, nan_at=1, max_iter=4)
    doctor = DoctorHook(dict(FAST, stop_on=[]))
    trainer.register_hooks([doctor])
    trainer.train()
    assert trainer.stop_reason is None and trainer.iter == 4
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())
    assert doctor.report.counts["non_finite_loss"] == 1


def test_healthy_tiny_run_has_no_findings_and_logs_to_storage(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=6)
    doctor = DoctorHook(FAST)
    trainer.register_hooks([doctor])
    trainer.train()
    assert doctor.report.findings == {}
    assert len(doctor.loss_series) == 6 and len(doctor.grad_series) == 6


def test_findings_reach_the_storage(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=3)
    trainer.model.head.requires_grad_(False)  # frozen after the optimizer was built
    doctor = DoctorHook(FAST)
    trainer.register_hooks([doctor])
    trainer.train()
    assert {"unexpected_frozen", "frozen_in_optimizer"} <= set(doctor.report.findings)
    assert [v for v, _ in trainer.storage.history("doctor/unexpected_frozen").values()] == [1.0]


def test_report_rate_limits_logging(caplog):
    report = DoctorReport(log_every_s=3600)
    with caplog.at_level(logging.INFO, logger="lazydet.doctor"):
        logged = [report.add(Finding("divergence", "error", f"x{i}", i)) for i in range(3)]
    assert logged == [True, False, False] and report.counts["divergence"] == 3
    assert sum("divergence" in r.message for r in caplog.records) == 1
    md = report.to_markdown()
    assert "Seen 3 times, last at iteration 2" in md and "x0" in md


def test_unknown_finding_and_setting_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown doctor finding 'nope'"):
        Finding("nope", "error", "")
    with pytest.raises(KeyError, match=r"train.doctor.loss.windw; did you mean: window"):
        merge_settings({"loss": {"windw": 3}})
    assert merge_settings({"loss": {"window": 3}})["loss"]["divergence_ratio"] == 2.0
    with pytest.raises(KeyError, match=r"train.doctor.stop_on names unknown findings \['diverge'\]"):
        merge_settings({"stop_on": ["diverge"]})


def test_early_stopper_patience_and_min_delta():
    s = EarlyStopper("bbox/AP", "max", patience=2, min_delta=0.5)
    got = [s.update(v, i) for i, v in enumerate([1.0, 2.0, 2.3, 2.4])]
    assert got[:3] == [None, None, None]  # 2.3 is not 0.5 better than 2.0: one bad evaluation
    assert got[3] == ("bbox/AP did not improve by more than 0.5 for 2 evaluations (best 2 at iter 1, "
                      "last 2.4 at iter 3)")
    s = EarlyStopper("val/total_loss", "min", patience=1)
    assert s.update(3.0, 0) is None and s.update(2.0, 1) is None
    assert s.update(2.5, 2).startswith("val/total_loss did not improve")


def test_early_stop_hook_stops_training_with_reason(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=50)

    class FakeEval(HookBase):  # puts a plateauing metric every 2 iterations
        def after_step(self):
            if self.trainer.iter % 2 == 1:
                self.trainer.storage.put_scalar("bbox/AP", min(self.trainer.iter, 5), smoothing_hint=False)

    doctor = DoctorHook(FAST)
    trainer.register_hooks([FakeEval(), doctor, EarlyStopHook("bbox/AP", "max", 3, 0.0, report=doctor.report)])
    trainer.train()
    assert trainer.stop_reason.startswith("early stop: bbox/AP did not improve")
    assert trainer.iter < 20 and "early_stopped" in doctor.report.findings
    state = trainer.hooks[-1].state_dict()
    assert state == {"best": 5.0, "best_iter": 5, "bad_evals": 3}
    again = EarlyStopHook("bbox/AP", "max", 3)
    again.load_state_dict(state)
    assert again.stopper.update(5.0, 20).startswith("bbox/AP did not improve")
    assert "early_stopped" in (tmp_path / "doctor_report.md").read_text()


def test_val_loss_hook_logs_comparable_losses_without_dn(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=4)
    val = [b for b, _ in zip(batches(seed=5), range(2))]
    hook = ValLossHook(period=2, num_batches=2, loader=val)
    trainer.register_hooks([hook])
    trainer.train()
    got = trainer.storage.history("val/total_loss").values()
    assert [it for _, it in got] == [1, 3]
    assert set(trainer.storage.histories()) >= {"val/loss_bbox", "train/total_loss_nodn"}
    assert "val/loss_bbox_dn" not in trainer.storage.histories()
    with torch.no_grad():
        trainer.model.train()
        expect = sum(float(trainer.model(b)["loss_bbox"]) for b in val) / 2
    assert abs(got[-1][0] - expect) < 1e-6


def test_build_doctor_hooks_follows_settings():
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({"train": {"doctor": {"enabled": True}}})
    assert [type(h).__name__ for h in build_doctor_hooks(cfg)] == ["DoctorHook"]
    cfg = OmegaConf.create({"train": {"doctor": {"enabled": False, "early_stop": {"enabled": True}}},
                            "dataloader": {"test": {}}})
    assert [type(h).__name__ for h in build_doctor_hooks(cfg)] == ["EarlyStopHook"]


def test_doctor_waits_for_the_lr_schedules_warmup():
    """The warm-up comes from the schedule's `LRMultiplier.warmup_iters` (a fraction of the run's length)."""
    from fvcore.common.param_scheduler import ConstantParamScheduler
    from omegaconf import OmegaConf

    from lazydet.solver import LRMultiplier, WarmupParamScheduler
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    scheduler = LRMultiplier(optimizer, WarmupParamScheduler(ConstantParamScheduler(1.0), 0.001, 0.25), 1000)
    cfg = OmegaConf.create({"train": {"doctor": {"warmup_iters": 100}}})
    assert build_doctor_hooks(cfg, scheduler)[0].s["warmup_iters"] == 250  # the schedule's is longer: it wins
    cfg.train.doctor.warmup_iters = 400
    assert build_doctor_hooks(cfg, scheduler)[0].s["warmup_iters"] == 400
    assert build_doctor_hooks(cfg)[0].s["warmup_iters"] == 400  # no schedule: the setting alone


def test_fp16_overflow_is_tolerated_until_it_persists():
    from types import SimpleNamespace

    from lazydet.engine import StopTraining

    class Scaler:
        def is_enabled(self):
            return True

    doctor = DoctorHook(dict(max_fp16_overflow_steps=3))
    doctor.trainer = SimpleNamespace(grad_scaler=Scaler(), last_batch=None, skip_step=False)
    for it in range(3):  # the GradScaler skips these steps itself
        doctor._non_finite(it, {}, [], ["head.weight"])
    assert doctor.report.findings == {} and doctor.trainer.skip_step is False
    with pytest.raises(StopTraining, match="non_finite_grad at iteration 3"):
        doctor._non_finite(3, {}, [], ["head.weight"])
    assert doctor.report.findings["non_finite_grad"].data["params"] == ["head.weight"]
    assert doctor.trainer.skip_step is True
