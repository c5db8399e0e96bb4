"""Devices: moving nested batches, choosing the training device, and the peak memory a process used."""
import resource
import sys

import torch


def to_device(obj, device, non_blocking: bool = True):
    """Move every tensor inside nested dicts/lists/tuples to `device`; other values are kept as they are."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device, non_blocking)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device, non_blocking) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)
    return obj


def resolve_device(name: str, logger=None) -> torch.device:
    """`"cuda"` without CUDA falls back to the CPU (said once by the caller's logger)."""
    name = str(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        if logger is not None:
            logger.warning(f"train.device={name!r} but CUDA is not available: running on the CPU.")
        return torch.device("cpu")
    return torch.device(name)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory in MiB: on CUDA `max_memory_allocated(device)` (since the last peak reset), elsewhere the
    peak resident set size of this process (`ru_maxrss`: KiB on Linux, bytes on macOS), which includes
    everything the process ever held, so compare it only between fresh processes."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
