"""Training doctor (placeholder until the doctor lands)."""


def build_doctor_hooks(cfg):
    """Hooks the engine registers for `cfg.train.doctor`; none yet."""
    return []
