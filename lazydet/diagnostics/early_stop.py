"""Early stopping on a validation metric (patience in evaluations, min delta); the reason is recorded."""
from __future__ import annotations

from lazydet.engine import HookBase, StopTraining

from .findings import DoctorReport, Finding


class EarlyStopper:
    """Pure bookkeeping: feed each new evaluation; `update` returns a reason string when it is time to stop."""

    def __init__(self, metric: str = "bbox/AP", mode: str = "max", patience: int = 5, min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"train.doctor.early_stop.mode must be 'max' or 'min', got {mode!r}")
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, int(patience), float(min_delta)
        self.best: float | None = None
        self.best_iter: int | None = None
        self.bad_evals = 0

    def update(self, value: float, iteration: int) -> str | None:
        """Feeds one evaluation. Returns None while the metric improved by more than `min_delta` within the last
        `patience` evaluations, else the one-line reason to stop (best value and iteration, last value)."""
        better = self.best is None or (value > self.best + self.min_delta if self.mode == "max"
                                       else value < self.best - self.min_delta)
        if better:
            self.best, self.best_iter, self.bad_evals = value, iteration, 0
            return None
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            return (f"{self.metric} did not improve by more than {self.min_delta} for {self.bad_evals} evaluations "
                    f"(best {self.best:.4g} at iter {self.best_iter}, last {value:.4g} at iter {iteration})")
        return None


class EarlyStopHook(HookBase):
    """Reads new `metric` entries from the event storage after each step; raises StopTraining with why."""

    def __init__(self, metric="bbox/AP", mode="max", patience=5, min_delta=0.0, report: DoctorReport | None = None):
        self.stopper = EarlyStopper(metric, mode, patience, min_delta)
        self.report = report
        self._seen = 0

    def after_step(self):
        """Feeds the evaluations logged since the last call; raises `StopTraining` (after adding an
        `early_stopped` finding to the report) when the stopper says so."""
        from .hook import storage_series
        series = storage_series(self.trainer.storage, self.stopper.metric)
        for it, value in series[self._seen:]:
            reason = self.stopper.update(value, it)
            if reason:
                if self.report is not None:
                    self.report.add(Finding("early_stopped", "info", reason, it))
                raise StopTraining(f"early stop: {reason}")
        self._seen = len(series)

    def state_dict(self) -> dict:
        """The stopper's best value, its iteration and the evaluations without improvement (saved in
        checkpoints by the trainer, so a resumed run keeps its patience)."""
        s = self.stopper
        return {"best": s.best, "best_iter": s.best_iter, "bad_evals": s.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        """Restores `state_dict()`'s output, so a resumed run keeps counting its patience."""
        s = self.stopper
        s.best, s.best_iter, s.bad_evals = state.get("best"), state.get("best_iter"), int(state.get("bad_evals", 0))
