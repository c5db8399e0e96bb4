# The training doctor's settings, used as `train.doctor` (see docs/doctor.md). Every key is listed here so
# that `train.doctor.<key>=value` overrides work and config.yaml shows what ran; the defaults live in
# lazydet/diagnostics/settings.py. A recipe changes only what differs, e.g.
#   train.doctor.preflight.reference_total_batch_size = 16; train.doctor.preflight.reference_lr = 1e-4
from lazydet.diagnostics.settings import default_settings

doctor = default_settings()
