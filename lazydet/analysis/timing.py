"""Time real training iterations of a recipe: the shared core of tools.benchmark and tools.ablate_precision.

The recipe's model, optimizer and train loader come from the engine's `build_training_parts` (what
train_net trains), and iterations run
through the engine's own `Trainer.run_step` (forward, loss, backward, fp16 GradScaler, clipping, optimizer
step); a hook reads the clock around each step, synchronising CUDA first. Two modes:

* data excluded: a few batches are fetched and moved to the device up front and replayed, so the figure
  is the model + optimizer alone;
* data included: the recipe's loader feeds the steps as in training.

Memory: CUDA peak allocated / reserved since the model was built; on CPU the peak RSS of the process
(meaningful only in a fresh process, which is why the ablation runs each cell in its own).
"""
from __future__ import annotations

import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TimeStats:
    """Seconds per iteration over the timed steps: median, min, max, and how many steps."""
    median: float
    min: float
    max: float
    iters: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "TimeStats":
        """The stats of a list of per-step seconds."""
        return cls(statistics.median(seconds), min(seconds), max(seconds), len(seconds))


@dataclass
class MemoryStats:
    """Peak memory of one measurement (CUDA allocated/reserved, or the CPU process's peak RSS), in MiB."""
    device: str
    allocated_mib: Optional[float] = None  # CUDA max_memory_allocated
    reserved_mib: Optional[float] = None  # CUDA max_memory_reserved
    peak_rss_mib: Optional[float] = None  # CPU: peak resident set of this process

    @property
    def main_mib(self) -> float:
        """The figure tables show: CUDA allocated, else peak RSS."""
        return self.allocated_mib if self.allocated_mib is not None else self.peak_rss_mib

    def describe(self) -> str:
        """A short human-readable form for tables and logs."""
        if self.allocated_mib is not None:
            return f"{self.allocated_mib:.0f} MiB alloc / {self.reserved_mib:.0f} MiB reserved"
        return f"{self.peak_rss_mib:.0f} MiB peak RSS"


def precision_supported(precision: str, device: torch.device) -> Optional[str]:
    """None when `precision` can run on `device`, else the reason it is skipped."""
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})"
    if device.type == "cpu" and precision == "fp16":
        return "fp16 autocast + GradScaler is not a CPU training mode (no fast fp16 kernels)"
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"bf16 not supported on {torch.cuda.get_device_name(device)}; skipped"
        if precision == "fp16" and torch.cuda.get_device_capability(device) < (5, 3):
            return f"fp16 not supported on {torch.cuda.get_device_name(device)}; skipped"
    return None


def memory_stats(device: torch.device) -> MemoryStats:
    """Peak memory so far: CUDA allocated (`peak_memory_mib`) and reserved, or the CPU process's peak RSS."""
    from lazydet.utils.device import peak_memory_mib

    if device.type == "cuda":
        return MemoryStats("cuda", peak_memory_mib(device), torch.cuda.max_memory_reserved(device) / 2**20)
    return MemoryStats(device.type, peak_rss_mib=peak_memory_mib(device))


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work on `device` (no-op elsewhere), so clock readings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resize_batch(batch: dict, size: int) -> dict:
    """Resize a batch's images (and pixel masks) to size x size; normalised boxes stay valid."""
    images = F.interpolate(batch["images"].float(), size=(size, size), mode="bilinear", align_corners=False)
    out = dict(batch)
    out["images"] = images.round().clamp(0, 255).to(batch["images"].dtype)
    if "pixel_mask" in batch:
        out["pixel_mask"] = F.interpolate(batch["pixel_mask"][:, None].float(), size=(size, size))[:, 0] > 0.5
    targets = []
    for t in batch.get("targets", []):
        t = dict(t)
        t["size"] = torch.tensor([size, size], dtype=torch.int64, device=batch["images"].device)
        targets.append(t)
    out["targets"] = targets
    return out


class _Resized:
    """A loader whose batches are resized to a fixed square size (the --image-size knob of the tools)."""

    def __init__(self, loader, size: Optional[int]):
        self.loader, self.size = loader, size

    def __iter__(self):
        for batch in self.loader:
            yield resize_batch(batch, self.size) if self.size else batch


def load_recipe(config_file: str, overrides: Sequence[str] = (), batch_size: Optional[int] = None,
                device: Optional[str] = None):
    """Load a recipe and apply the tools' knobs as ordinary overrides (so bad keys fail the usual way)."""
    from lazydet.config import LazyConfig

    cfg = LazyConfig.load(config_file)
    extra = list(overrides)
    if batch_size is not None:
        extra.append(f"dataloader.train.total_batch_size={int(batch_size)}")
    if device is not None:
        extra.append(f"train.device={device}")
    LazyConfig.apply_overrides(cfg, extra)
    return cfg


def build_parts(cfg):
    """The engine's `build_training_parts(cfg)` (model, optimizer, train loader, schedule as training builds
    them), seeded with `train.seed` (0 when it is -1) and with the CUDA peak-memory counters reset first, so
    `memory_stats` measures from the model's construction on."""
    from lazydet.engine import build_training_parts, training_device
    from lazydet.utils.env import seed_all_rng

    device = training_device(cfg.train)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_all_rng(max(int(cfg.train.seed), 0))
    return build_training_parts(cfg, device)


def _trainer(parts, loader, precision: str, max_iter: int):
    """A Trainer over `parts` at `precision`, with the recipe's gradient clipping, and no hooks."""
    from lazydet.engine import Trainer

    clip = parts.cfg.train.clip_grad
    dtype = PRECISIONS[precision]
    return Trainer(parts.model, loader, parts.optimizer, max_iter=max_iter, cfg=None, device=parts.device,
                   amp_enabled=dtype is not None, amp_dtype=dtype or "bf16",
                   clip_grad_max_norm=clip.params.max_norm if clip.enabled else None,
                   clip_grad_norm_type=clip.params.norm_type)


def _step_timer(device: torch.device, skip: int, out: List[float]):
    from lazydet.engine import HookBase

    class StepTimer(HookBase):
        """Wall time of each step after the first `skip` (warm-up), CUDA synchronised."""

        def before_step(self):
            synchronize(device)
            self._t0 = time.perf_counter()

        def after_step(self):
            synchronize(device)
            if self.trainer.iter - self.trainer.start_iter >= skip:
                out.append(time.perf_counter() - self._t0)

    return StepTimer()


def time_training(parts, precision: str = "fp32", iters: int = 10, warmup: int = 3,
                  include_data: bool = False, image_size: Optional[int] = None, num_cached_batches: int = 2,
                  progress: bool = False) -> TimeStats:
    """Seconds per training iteration over `iters` steps after `warmup` steps."""
    from lazydet.utils import to_device

    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    loader = _Resized(parts.data_loader, image_size)
    if not include_data:
        it = iter(loader)
        cached = [to_device(next(it), parts.device) for _ in range(num_cached_batches)]
        loader = itertools.cycle(cached)
    parts.model.train()
    trainer = _trainer(parts, loader, precision, warmup + iters)
    seconds: List[float] = []
    trainer.register_hooks([_step_timer(parts.device, warmup, seconds)])
    if progress:
        from lazydet.engine import HookBase

        class Progress(HookBase):
            def after_step(self):
                print(f"  step {self.trainer.iter + 1}/{self.trainer.max_iter}", file=sys.stderr, flush=True)

        trainer.register_hooks([Progress()])
    trainer.train()
    if trainer.stop_reason:
        raise RuntimeError(f"training stopped early: {trainer.stop_reason}")
    return TimeStats.of(seconds)


@torch.no_grad()
def time_inference(parts, iters: int = 5, warmup: int = 1, image_size: Optional[int] = None,
                   precision: str = "fp32") -> float:
    """Images per second of model.eval() forward on a replayed training batch (post-processing included)."""
    from lazydet.utils import to_device

    batch = to_device(next(iter(_Resized(parts.data_loader, image_size))), parts.device)
    dtype = PRECISIONS[precision]
    parts.model.eval()
    seconds = []
    for i in range(warmup + iters):
        synchronize(parts.device)
        t0 = time.perf_counter()
        with torch.autocast(parts.device.type, dtype=dtype, enabled=dtype is not None):
            parts.model(batch)
        synchronize(parts.device)
        if i >= warmup:
            seconds.append(time.perf_counter() - t0)
    parts.model.train()
    return batch["images"].shape[0] / statistics.median(seconds)


def count_parameters(model: torch.nn.Module) -> dict:
    """{"total": all parameters, "trainable": those with requires_grad} of `model`."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
