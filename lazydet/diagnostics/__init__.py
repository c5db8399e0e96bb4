"""Training doctor: checks that tell why a run does not learn, a hook that runs them, and the report.

See docs/doctor.md. `build_doctor_hooks(cfg, lr_scheduler)` is what scripts/train_net.py registers.
"""
from .findings import CATALOG, DoctorReport, Finding
from .settings import DEFAULTS, default_settings, merge_settings


def build_doctor_hooks(cfg, lr_scheduler=None) -> list:
    """Hooks for `cfg.train.doctor`: the doctor, plus the validation-loss and early-stop hooks when enabled.
    `lr_scheduler` (an `LRMultiplier`; None when there is none) tells the doctor how long the lr warms up.
    scripts/train_net.py registers them like any other extra hook; the engine does not know the doctor."""
    from .early_stop import EarlyStopHook
    from .hook import DoctorHook
    from .val_loss import ValLossHook

    settings = merge_settings(cfg.train.doctor)
    hooks, report = [], None
    if settings["enabled"]:
        doctor = DoctorHook(settings, cfg=cfg, lr_warmup_iters=getattr(lr_scheduler, "warmup_iters", 0))
        report = doctor.report
        hooks.append(doctor)
    if settings["val_loss_period"]:
        hooks.append(ValLossHook(settings["val_loss_period"], settings["val_loss_batches"],
                                 loader_cfg=cfg.dataloader.test))
    es = settings["early_stop"]
    if es["enabled"]:
        hooks.append(EarlyStopHook(es["metric"], es["mode"], es["patience"], es["min_delta"], report=report))
    return hooks


__all__ = ["CATALOG", "DEFAULTS", "DoctorReport", "Finding", "build_doctor_hooks", "default_settings",
           "merge_settings"]
