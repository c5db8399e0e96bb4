"""Optimizer parameter groups and LR schedules."""
from .param_groups import (DEFAULT_NO_WEIGHT_DECAY_KEYS, ViTLayerDecay, format_param_group_table,
                           get_default_optimizer_params, get_vit_lr_decay_rate, param_group_table)
from .schedulers import LRMultiplier, WarmupParamScheduler, multistep_multiplier

__all__ = [
    "get_default_optimizer_params", "get_vit_lr_decay_rate", "ViTLayerDecay", "param_group_table",
    "format_param_group_table", "DEFAULT_NO_WEIGHT_DECAY_KEYS", "LRMultiplier", "WarmupParamScheduler",
    "multistep_multiplier",
]
