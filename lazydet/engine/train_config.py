"""Values of the `train.*` settings, checked before anything is built, spawned or written.

`validate_train_config(cfg)` turns a bad value (a length of 0, a checkpoint period of 2.5, an unknown amp
dtype or device) into one `ConfigError` line naming the key, the value and what is allowed, instead of a
traceback after the output folder was written and the model built, or a silently truncated period.
Only keys present in the config are checked (a missing key keeps its default); `None` means "not set".
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import ConfigError
from ..config.errors import one_line
from .trainer import AMP_DTYPES

_ABSENT = object()
DEVICE_TYPES = ("cpu", "cuda")  # what build_trainer moves the model to ("cuda" falls back to the CPU)

# (iterations key, epochs key, smallest allowed value, what the value is for)
LENGTHS = (
    ("train.max_iter", "train.max_epochs", 1, "the training length"),
    ("train.eval_period", "train.eval_period_epochs", 0, "between evaluations; 0 = only after the last iteration"),
    ("train.checkpointer.period", "train.checkpointer.period_epochs", 1, "between checkpoints"),
)


def validate_train_config(cfg) -> None:
    """Raise a one-line `ConfigError` for the first bad `train.*` value of `cfg` (a DictConfig); return None
    when every present value is usable.

    Checked: `max_iter`, `eval_period`, `checkpointer.period` (integers: >= 1, eval >= 0; 1e5 is fine,
    2.5 is not) unless their `*_epochs` variant is set, which must then be a finite number > 0 (eval: >= 0);
    `grad_accumulation_steps` (integer >= 1); `amp.dtype` (a name of `AMP_DTYPES` or torch.bfloat16/float16);
    `device` ("cpu", "cuda"; "cuda:<index>" is accepted)."""
    for iter_key, epoch_key, low, meaning in LENGTHS:
        if _value(cfg, epoch_key) is not None:
            _check_epochs(epoch_key, _value(cfg, epoch_key), low, f"({meaning}), or None to use {iter_key}")
        elif _value(cfg, iter_key) is not None:
            _check_whole(iter_key, _value(cfg, iter_key), low, "iterations", f"({meaning}), or set {epoch_key} instead")
        elif iter_key == "train.max_iter" and _value(cfg, iter_key, default=_ABSENT) is None:
            raise ConfigError("train.max_iter=None and train.max_epochs is not set: set one of them "
                              "(e.g. train.max_iter=90000 or train.max_epochs=12)")
    if _value(cfg, "train.grad_accumulation_steps") is not None:
        _check_whole("train.grad_accumulation_steps", _value(cfg, "train.grad_accumulation_steps"), 1, "batches",
                     "(per optimizer step)")
    dtype = _value(cfg, "train.amp.dtype")
    known = dtype in AMP_DTYPES if isinstance(dtype, str) else dtype in AMP_DTYPES.values()
    if dtype is not None and not known:
        raise ConfigError(f"train.amp.dtype={dtype!r} is not a mixed-precision dtype: use one of "
                          f"{', '.join(map(repr, AMP_DTYPES))} (fp16 adds a GradScaler)")
    device = _value(cfg, "train.device")
    if device is not None:
        _check_device(device)


def _value(cfg, key: str, default: Any = None) -> Any:
    """cfg's value at the dotted `key` (interpolations resolved); `default` when a part of the key is missing."""
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{key}: cannot be read: {type(e).__name__}: {one_line(str(e).splitlines()[0])}") from e


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_whole(key: str, value: Any, low: int, unit: str, note: str) -> None:
    """`value` must be a whole number >= low; an integral float such as 1e5 is accepted (nothing is rounded)."""
    if not (_is_number(value) and math.isfinite(value) and float(value).is_integer() and value >= low):
        raise ConfigError(f"{key}={value!r} must be a whole number of {unit} >= {low} {note}")


def _check_epochs(key: str, value: Any, low: int, note: str) -> None:
    """`value` (epochs, fractions allowed) must be a finite number > 0, or >= 0 when low is 0."""
    if not (_is_number(value) and math.isfinite(value) and (value > 0 or (low == 0 and value == 0))):
        raise ConfigError(f"{key}={value!r} must be a number of epochs {'> 0' if low else '>= 0'} {note}")


def _check_device(device: Any) -> None:
    """Accepts "cpu", "cuda" and "cuda:<index>" (each process uses the GPU of its local rank anyway)."""
    allowed = "'cuda' (falls back to the CPU when CUDA is missing) or 'cpu'"
    try:
        parsed = torch.device(device) if isinstance(device, str) else None
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise ConfigError(f"train.device={device!r} is not a device lazydet trains on: use {allowed}")
