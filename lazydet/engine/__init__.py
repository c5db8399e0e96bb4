"""Training engine: Trainer (one iteration), hooks, launch (spawn / torchrun / srun), the run's start
(argument parser, setup) and the builders of its parts (`build.py`). scripts/train_net.py wires them."""
from .build import (RunLengths, TrainingParts, build_model, build_training_parts, build_writers, create_ddp_model,
                    load_ema_weights, missing_keys_as_errors, resolve_lengths, training_device)
from .defaults import default_argument_parser, default_setup
from .ema import ModelEMA
from .hooks import (BestCheckpointer, EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter,
                    ProgressBar)
from .launch import launch
from .trainer import HookBase, StopTraining, Trainer

__all__ = [
    "Trainer", "HookBase", "StopTraining", "launch", "default_argument_parser", "default_setup",
    "build_training_parts", "TrainingParts", "build_model", "training_device", "resolve_lengths", "RunLengths",
    "create_ddp_model", "build_writers", "load_ema_weights", "missing_keys_as_errors", "ModelEMA",
    "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "BestCheckpointer", "PeriodicWriter",
    "ProgressBar",
]
