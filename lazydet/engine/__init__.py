"""Training engine: Trainer (one iteration), hooks, launch (spawn / torchrun / srun), train_net defaults."""
from .defaults import (build_hooks, build_trainer, build_writers, create_ddp_model, default_argument_parser,
                       default_setup, do_test, resolve_lengths)
from .ema import ModelEMA
from .hooks import (BestCheckpointer, EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter,
                    ProgressBar)
from .launch import launch
from .trainer import HookBase, StopTraining, Trainer

__all__ = [
    "Trainer", "HookBase", "StopTraining", "launch", "default_argument_parser", "default_setup", "build_trainer",
    "build_hooks", "build_writers", "create_ddp_model", "do_test", "resolve_lengths", "ModelEMA",
    "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "BestCheckpointer", "PeriodicWriter",
    "ProgressBar",
]
