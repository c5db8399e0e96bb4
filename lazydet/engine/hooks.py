"""Hooks with one job each: timing, lr schedule, checkpoints, evaluation, best model, writing metrics."""
import logging
import math
import os
import re
import sys
import time

import torch

from ..utils import comm
from ..utils.device import peak_memory_mib
from ..utils.env import preserve_rng_state
from ..utils.logger import warn_once
from ..utils.writers import stdout_is_tty
from .trainer import HookBase

logger = logging.getLogger("lazydet")


class IterationTimer(HookBase):
    """Puts `time` (seconds per iteration), `eta_seconds` and `max_mem_mb`; logs the total at the end."""

    def __init__(self, window: int = 20):
        self.window = window
        self._step_start = None
        self._train_start = None

    def before_train(self):
        """Start the clock of the whole run (logged by after_train)."""
        self._train_start = time.perf_counter()

    def before_step(self):
        """Start this step's clock (after a CUDA sync, so queued work is not counted here)."""
        if self.trainer.device.type == "cuda":
            torch.cuda.synchronize(self.trainer.device)
        self._step_start = time.perf_counter()

    def after_step(self):
        """Put `time` (the step, CUDA synced), `eta_seconds` (median step time x steps left) and `max_mem_mb`."""
        if self.trainer.device.type == "cuda":
            torch.cuda.synchronize(self.trainer.device)
        storage = self.trainer.storage
        storage.put_scalar("time", time.perf_counter() - self._step_start)
        remaining = self.trainer.max_iter - self.trainer.iter - 1
        storage.put_scalar("eta_seconds", storage.history("time").median(self.window) * remaining,
                           smoothing_hint=False)
        storage.put_scalar("max_mem_mb", peak_memory_mib(self.trainer.device), smoothing_hint=False)

    def after_train(self):
        """Log the total training time and the time per iteration."""
        if self._train_start is None:
            return
        total = time.perf_counter() - self._train_start
        done = self.trainer.iter - self.trainer.start_iter
        logger.info(f"Total training time: {total:.1f} s for {done} iterations"
                    + (f" ({total / done:.4f} s/it)" if done > 0 else ""))


class LRScheduler(HookBase):
    """Steps the torch scheduler after every iteration and puts `lr` (of the largest param group)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def _logged_group(self) -> int:
        groups = self.trainer.optimizer.param_groups
        return max(range(len(groups)), key=lambda i: sum(p.numel() for p in groups[i]["params"]))

    def after_step(self):
        """Put this step's `lr` (the largest group's), then step the scheduler to the next iteration's lr."""
        lr = self.trainer.optimizer.param_groups[self._logged_group()]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves `model_<iter>.pth` every `period` iterations and `model_final.pth` at the end; keeps the
    newest `max_to_keep` periodic files."""

    def __init__(self, checkpointer, period: int, max_to_keep: int = None):
        self.checkpointer = checkpointer
        self.period = int(period)
        self.max_to_keep = max_to_keep

    def after_step(self):
        """Save `model_final.pth` after the last iteration and `model_<iter>.pth` every `period` iterations
        (collective), then delete the oldest periodic ones beyond `max_to_keep`."""
        it = self.trainer.iter
        if it + 1 >= self.trainer.max_iter:
            self.checkpointer.save("model_final", iteration=it)
            return
        if self.period > 0 and (it + 1) % self.period == 0:
            self.checkpointer.save(f"model_{it:07d}", iteration=it)
            self._prune()

    def _prune(self):
        """Delete the oldest `model_<iter>.pth` files (from this run or earlier ones) beyond max_to_keep."""
        if not self.max_to_keep or not comm.is_main_process() or not self.checkpointer.save_dir:
            return
        folder = self.checkpointer.save_dir
        periodic = sorted(f for f in os.listdir(folder) if re.fullmatch(r"model_\d{7}\.pth", f))
        current = self.checkpointer.get_checkpoint_file()
        for f in periodic[:-self.max_to_keep]:
            path = os.path.join(folder, f)
            if path != current:
                os.remove(path)


class EvalHook(HookBase):
    """Runs `eval_function()` every `period` iterations and after the last one (not after a stop).

    Collective: every rank calls it (each evaluates its shard); the main process's result dict is
    broadcast so that all ranks put the same metrics (smoothing off) into the storage. Evaluation does not
    change the training random streams.
    """

    def __init__(self, period: int, eval_function):
        self.period = int(period)
        self.eval_function = eval_function

    def _do_eval(self):
        with preserve_rng_state():
            results = self.eval_function()
        results = comm.broadcast_object(results or {})
        flat = {k: float(v) for k, v in results.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if flat:
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        comm.synchronize()

    def after_step(self):
        """Evaluate every `eval_period` iterations (not at the last one: after_train does)."""
        nxt = self.trainer.iter + 1
        if self.period > 0 and nxt % self.period == 0 and nxt < self.trainer.max_iter:
            self._do_eval()

    def after_train(self):
        """Evaluate after the last iteration (not when a hook stopped training early)."""
        if self.trainer.stop_reason is None and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()


class BestCheckpointer(HookBase):
    """Saves `model_best.pth` whenever a new value of `metric` beats the best so far (mode max or min).
    Place it after the EvalHook. Does not move `last_checkpoint` (resume keeps using the newest file)."""

    def __init__(self, checkpointer, metric: str = "bbox/AP", mode: str = "max", file_prefix: str = "model_best"):
        if mode not in ("max", "min"):
            raise ValueError(f"train.best_checkpointer.mode={mode!r} must be 'max' or 'min'")
        self.checkpointer = checkpointer
        self.metric = metric
        self.mode = mode
        self.file_prefix = file_prefix
        self.best_value = None
        self.best_iter = None
        self._seen_iter = -1

    def _check(self):
        storage = self.trainer.storage
        if self.metric not in storage.histories():
            prefix = self.metric.split("/")[0] + "/"  # results of the same evaluator exist, but not this metric
            if "/" in self.metric and any(k.startswith(prefix) for k in storage.histories()):
                warn_once(logger, f"best-{self.metric}", f"BestCheckpointer: metric {self.metric!r} not in the "
                          "evaluation results; set train.best_checkpointer.metric to one that exists")
            return
        value, it = storage.history(self.metric).values()[-1]
        if it <= self._seen_iter:
            return
        self._seen_iter = it
        better = self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value)
        if better:
            logger.info(f"New best {self.metric}={value:.4f} at iteration {it} (previous {self.best_value})")
            self.best_value, self.best_iter = value, it
            self.checkpointer.save(self.file_prefix, iteration=it, update_last=False)

    def after_step(self):
        """Save `model_best.pth` when the latest value of `metric` beats the best so far."""
        self._check()

    def after_train(self):
        """The final evaluation may be the best: check it once more."""
        self._check()

    def state_dict(self):
        """The best value and its iteration (saved in checkpoints, so a resumed run keeps comparing)."""
        return {"best_value": self.best_value, "best_iter": self.best_iter}

    def load_state_dict(self, state):
        """Restore `state_dict()`."""
        self.best_value, self.best_iter = state.get("best_value"), state.get("best_iter")


class PeriodicWriter(HookBase):
    """Calls every writer each `period` iterations, after the last iteration, and at the end."""

    def __init__(self, writers, period: int = 20):
        self.writers = list(writers)
        self.period = max(int(period), 1)

    def _write(self):
        for w in self.writers:
            w.write()

    def after_step(self):
        """Write the metrics every `period` iterations (and at the last one)."""
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it + 1 >= self.trainer.max_iter:
            self._write()

    def after_train(self):
        """Write what is left and close the writers."""
        self._write()
        for w in self.writers:
            w.close()


class ProgressBar(HookBase):
    """A single-line progress display, only when stdout is a terminal (log files stay clean)."""

    def __init__(self, min_interval: float = 0.5, width: int = 30):
        self.enabled = stdout_is_tty() and comm.is_main_process()
        self.min_interval = min_interval
        self.width = width
        self._last = 0.0

    def after_step(self):
        """Redraw the one-line bar (terminals only; log files never get it)."""
        now = time.perf_counter()
        if not self.enabled or now - self._last < self.min_interval:
            return
        self._last = now
        t = self.trainer
        frac = (t.iter + 1) / t.max_iter
        bar = "#" * int(frac * self.width)
        hist = t.storage.histories()
        eta = hist["eta_seconds"].latest() if "eta_seconds" in hist else float("nan")
        loss = hist["total_loss"].median(20) if "total_loss" in hist else float("nan")
        epoch = f" ep {t.storage.epoch:.2f}" if t.storage.epoch is not None else ""
        sys.stdout.write(f"\r\033[K[{bar:<{self.width}}] {100 * frac:5.1f}% it {t.iter + 1}/{t.max_iter}{epoch} "
                         f"loss {loss:.4g} eta {eta:.0f}s")
        sys.stdout.flush()

    def after_train(self):
        """End the bar's line."""
        if self.enabled:
            sys.stdout.write("\n")
            sys.stdout.flush()
