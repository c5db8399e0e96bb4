"""Exponential moving average of model weights (evaluated instead of the raw weights when enabled)."""
import copy

import torch


class ModelEMA:
    """`ema = decay * ema + (1 - decay) * weights` after every optimizer step; buffers are copied."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9998):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema.decay={decay} must be in (0, 1)")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach().to(e.dtype), 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)
        self.updates += 1

    @torch.no_grad()
    def reset_from(self, model: torch.nn.Module) -> None:
        """Start averaging from `model`'s current weights (after init weights were loaded)."""
        self.module.load_state_dict(model.state_dict())
        self.updates = 0

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state.get("updates", 0))
