"""Optimizers with parameter groups (no weight decay on norms, biases, position embeddings and tokens).
`optimizer.params.model` is filled in by the engine; `base_lr` follows `optimizer.lr`."""
import torch

from lazydet.config import LazyCall as L
from lazydet.solver import get_default_optimizer_params

AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(
        # model is set by the engine: cfg.optimizer.params.model = model
        base_lr="${..lr}",
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
        weight_decay_embed=0.0,
        lr_factor_func=None,
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0, weight_decay_bias=0.0),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)
