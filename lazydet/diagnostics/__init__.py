"""Training doctor: checks that tell why a run does not learn, a hook that runs them, and the report.

See docs/doctor.md. `build_doctor_hooks(cfg)` is what the engine registers.
"""
from .findings import CATALOG, DoctorReport, Finding
from .settings import DEFAULTS, default_settings, merge_settings


def build_doctor_hooks(cfg) -> list:
    """Hooks for `cfg.train.doctor`: the doctor, plus the validation-loss and early-stop hooks when enabled."""
    from .early_stop import EarlyStopHook
    from .hook import DoctorHook
    from .val_loss import ValLossHook

    train = cfg.get("train", {}) if hasattr(cfg, "get") else getattr(cfg, "train", {})
    settings = merge_settings(train.get("doctor") if hasattr(train, "get") else None)
    hooks, report = [], None
    if settings["enabled"]:
        doctor = DoctorHook(settings, cfg=cfg)
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
