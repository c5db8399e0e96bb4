"""Exponential moving average of model weights (evaluated instead of the raw weights when enabled).

The averaging is timm's `ModelEmaV3` (foreach kernels: one launch for all parameters on CUDA), configured as
lazydet's EMA has always been: a constant decay (no warm-up), parameters averaged and buffers copied, no
stochastic rounding (its private generator is not checkpointed, which would break exact resume; lazydet's
parameters are float32, where it does not apply anyway). This class adds what the engine relies on: the
checkpoint format (`{"module", "updates", "decay"}` under the checkpoint's `ema` key), the update count, and
a restart from given weights.
"""
import torch
from timm.utils import ModelEmaV3


class ModelEMA:
    """After every optimizer step, `update(model)`: for each parameter `ema = decay * ema + (1 - decay) * p`,
    buffers (e.g. BatchNorm statistics) copied. `module` is the averaged copy of the model, in eval mode and
    without gradients: what `Trainer.eval_model()` evaluates."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9998):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema.decay={decay} must be in (0, 1)")
        self._average = ModelEmaV3(model, decay=float(decay), exclude_buffers=True, stochastic_rounding=False)
        self.module = self._average.module.requires_grad_(False)
        self.updates = 0

    @property
    def decay(self) -> float:
        """The constant decay (`train.ema.decay`)."""
        return self._average.decay

    def update(self, model: torch.nn.Module) -> None:
        """Average in `model`'s current weights (the bare module, not a DDP wrapper: same parameter order)."""
        self._average.update(model)  # no step given: the constant decay
        self.updates += 1

    def reset_from(self, model: torch.nn.Module) -> None:
        """Start averaging from `model`'s current weights (after init weights were loaded)."""
        self._average.set(model)
        self.updates = 0

    def state_dict(self) -> dict:
        """`{"module": the averaged weights' state dict, "updates": int, "decay": float}`: the checkpoint's `ema`."""
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        """Restores `state_dict()`'s output (the decay stays the configured one)."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state.get("updates", 0))
