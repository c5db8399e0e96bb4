"""LR schedules: fvcore ParamSchedulers (functions of training progress in [0, 1]) times each group's base lr."""
import math

import torch
from fvcore.common.param_scheduler import CompositeParamScheduler, ConstantParamScheduler, \
    LinearParamScheduler, ParamScheduler


class WarmupParamScheduler(CompositeParamScheduler):
    """`scheduler` with a warm-up over the first `warmup_length` (fraction of training) of the run.

    Warm-up starts at `warmup_factor * scheduler(warmup_length)` and rises linearly (or stays constant with
    warmup_method="constant") to the scheduler's value; afterwards the scheduler runs unchanged (its own
    notion of progress is not rescaled unless `rescale_interval=True`).
    """

    def __init__(self, scheduler: ParamScheduler, warmup_factor: float, warmup_length: float,
                 warmup_method: str = "linear", rescale_interval: bool = False):
        if not 0.0 <= warmup_length < 1.0:
            raise ValueError(f"WarmupParamScheduler: warmup_length={warmup_length} must be in [0, 1)")
        self.warmup_length = float(warmup_length)  # read by LRMultiplier.warmup_iters
        end_value = scheduler(warmup_length)
        start_value = warmup_factor * end_value
        if warmup_method == "constant":
            warmup = ConstantParamScheduler(start_value)
        elif warmup_method == "linear":
            warmup = LinearParamScheduler(start_value, end_value)
        else:
            raise ValueError(f"WarmupParamScheduler: unknown warmup_method={warmup_method!r} (linear or constant)")
        if warmup_length == 0.0:
            warmup_length = 1e-9
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "rescaled" if rescale_interval else "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Torch scheduler: lr of group g at iteration i = base_lr_g * multiplier(i / max_iter).

    `multiplier` is an fvcore ParamScheduler (stateless), so resuming needs only `last_epoch`, which
    `state_dict()` holds. Step it once per iteration, after `optimizer.step()`.
    """

    def __init__(self, optimizer, multiplier: ParamScheduler, max_iter: int, last_iter: int = -1):
        if not isinstance(multiplier, ParamScheduler):
            raise ValueError(f"LRMultiplier: multiplier must be an fvcore ParamScheduler, got {type(multiplier)}")
        self._multiplier = multiplier
        self._max_iter = int(max_iter)
        super().__init__(optimizer, last_epoch=last_iter)

    @property
    def warmup_iters(self) -> int:
        """Iterations of the multiplier's warm-up at this run's length (`warmup_length x max_iter`, rounded),
        0 when the multiplier has none. Tools that must wait for the warm-up (the doctor) read it here
        instead of parsing the recipe's `lr_multiplier`."""
        return int(round(getattr(self._multiplier, "warmup_length", 0.0) * self._max_iter))

    def state_dict(self):
        """What resuming needs: the base lrs and the iteration (the multiplier itself is stateless)."""
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict):
        """Restore `state_dict()` and set every group's lr to the restored iteration's value."""
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_lr(self):
        """Each group's base lr times the multiplier at the current progress, clamped to [0, 1). The step after
        the last iteration reaches 1.0, where fvcore's ConstantParamScheduler (and others) raise; that lr
        trains nothing, so it is taken just before the end."""
        where = min(max(self.last_epoch / self._max_iter, 0.0), math.nextafter(1.0, 0.0))
        m = self._multiplier(where)
        return [base * m for base in self.base_lrs]

    def _get_closed_form_lr(self):
        """Same as `get_lr` (the lr is a closed form of the iteration)."""
        return self.get_lr()


def multistep_multiplier(max_iter: int, steps, gamma: float = 0.1, warmup_iters: int = 0,
                         warmup_factor: float = 0.001) -> ParamScheduler:
    """Constant 1.0, times `gamma` after each iteration in `steps`, with an optional linear warm-up."""
    from fvcore.common.param_scheduler import MultiStepParamScheduler

    steps = [int(s) for s in steps]
    values = [gamma ** i for i in range(len(steps) + 1)]
    sched = MultiStepParamScheduler(values=values, milestones=steps, num_updates=int(max_iter))
    if warmup_iters <= 0:
        return sched
    return WarmupParamScheduler(sched, warmup_factor, warmup_iters / max_iter)


__all__ = ["WarmupParamScheduler", "LRMultiplier", "multistep_multiplier"]
